%% @doc Plugin metrics for VerneMQ.
%%
%% VerneMQ (vmq_server's vmq_metrics, releases that have "pluggable metrics")
%% walks `application:which_applications()', reads each app's env key
%% `vmq_metrics_mfa' = {M, F, A}, applies it and expects a list of
%% `{Type, Labels, UniqueId, Name, Description, Value}':
%%   Type        counter | gauge (histogram takes {Count, Sum, Buckets})
%%   Labels      [{atom(), string()}] -- e.g. [{result, "accepted"}]
%%   UniqueId    atom, unique among ALL metrics of the node (values are looked
%%               up by it)
%%   Name        atom, the exported name; several label variants share it
%%   Description binary
%%   Value       the number
%% It wraps the call in try/catch, so a raise only loses our metrics, but we
%% never raise anyway: on any error this returns [].
%%
%% Names are prefixed warden_ and never depend on the data (the label values
%% come from fixed lists below), so the set is stable across calls.
-module(vmq_warden_metrics).

-export([metrics/0, metric_defs/0]).

-type metric() :: {counter | gauge, [{atom(), string()}], atom(), atom(), binary(),
                   non_neg_integer()}.

-define(REFUSAL_REASONS, [bad_username_or_password, not_authorized, banned,
                          connection_rate_exceeded, client_identifier_not_valid,
                          quota_exceeded]).
-define(EVENT_HOOKS, [auth_on_register, on_register, on_client_wakeup,
                      on_client_offline, on_client_gone, on_session_expired]).
-define(REGISTRY_STATES, [authenticated, online, offline]).

%% @doc Current metric values, for `vmq_metrics_mfa'. Never raises.
-spec metrics() -> [metric()].
metrics() ->
    %% from_stats/1 takes only a map: anything else is a function_clause,
    %% caught here like every other failure.
    try
        from_stats(vmq_warden:stats())
    catch
        _:_ -> []
    end.

%% Metrics whose value is absent from the stats map (or not a non-negative
%% integer) are left out rather than reported as 0.
from_stats(Stats) when is_map(Stats) ->
    try
        lists:filtermap(
          fun({Type, Labels, Id, Name, Desc, Path}) ->
                  case get_path(Path, Stats) of
                      V when is_integer(V), V >= 0 -> {true, {Type, Labels, Id, Name, Desc, V}};
                      _ -> false
                  end
          end, metric_defs())
    catch
        _:_ -> []
    end.

get_path([], V) -> V;
get_path([K | Rest], M) when is_map(M) ->
    case M of
        #{K := V} -> get_path(Rest, V);
        _ -> undefined
    end;
get_path(_, _) -> undefined.

%% @doc The fixed metric definitions: {Type, Labels, UniqueId, Name,
%% Description, PathInStats}.
-spec metric_defs() -> [{counter | gauge, [{atom(), string()}], atom(), atom(), binary(), [atom()]}].
metric_defs() ->
    [{counter, [{result, atom_to_list(R)}], id("warden_decisions_", R), warden_decisions,
      <<"Authentication decisions taken by vmq_warden, by result">>, [decisions, R]}
     || R <- [accepted, next, failed]]
    ++
    [{counter, [{reason, atom_to_list(R)}], id("warden_refusals_", R), warden_refusals,
      <<"Connects refused by vmq_warden, by reason">>, [decisions, refused, R]}
     || R <- ?REFUSAL_REASONS]
    ++
    [{counter, [{hook, atom_to_list(H)}], id("warden_events_", H), warden_events,
      <<"Lifecycle hook events seen by vmq_warden, by hook">>, [events, H]}
     || H <- ?EVENT_HOOKS]
    ++
    [{counter, [], warden_stale_events, warden_stale_events,
      <<"Lifecycle events ignored because they came from a stale queue">>, [stale_events]}]
    ++
    [{gauge, [{state, atom_to_list(S)}], id("warden_sessions_", S), warden_sessions,
      <<"Sessions in the vmq_warden registry, by state">>, [registry, S]}
     || S <- ?REGISTRY_STATES]
    ++
    [{counter, [], warden_reconciled, warden_reconciled,
      <<"Registry records corrected to the broker's own view by the reconciliation">>,
      [registry, reconciled]}]
    ++
    [{counter, [], warden_cache_hits, warden_cache_hits,
      <<"Auth cache hits">>, [cache, hits]},
     {counter, [], warden_cache_misses, warden_cache_misses,
      <<"Auth cache misses">>, [cache, misses]},
     {gauge, [], warden_bans_active, warden_bans_active,
      <<"Active bans (addresses and usernames)">>, [bans_active]},
     {counter, [], warden_server_busy, warden_server_busy,
      <<"Connects refused as server busy: no slow-verification slot came free in time">>,
      [server_busy]}]
    ++
    [{counter, [{result, atom_to_list(R)}], id("warden_reloads_", R), warden_reloads,
      <<"Policy/password file reloads, by result">>, [reloads, R]}
     || R <- [ok, failed]]
    ++
    [{counter, [], warden_verify_count, warden_verify_count,
      <<"Password verifications performed">>, [verify, count]},
     {counter, [], warden_verify_time_us, warden_verify_time_us,
      <<"Total time spent verifying passwords, in microseconds">>, [verify, total_us]}].

id(Prefix, Atom) ->
    list_to_atom(Prefix ++ atom_to_list(Atom)).
