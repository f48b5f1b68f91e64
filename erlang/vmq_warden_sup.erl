-module(vmq_warden_sup).
-behaviour(supervisor).
-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Children = [#{id => vmq_warden_log, start => {vmq_warden_log, start_link, []}},
                #{id => vmq_warden_reloader, start => {vmq_warden_reloader, start_link, []}},
                #{id => vmq_warden_reconciler, start => {vmq_warden_reconciler, start_link, []}},
                %% the webhook first: the events process hands it batches
                #{id => vmq_warden_webhook, start => {vmq_warden_webhook, start_link, []}},
                #{id => vmq_warden_events, start => {vmq_warden_events, start_link, []}},
                #{id => vmq_warden_enforcer, start => {vmq_warden_enforcer, start_link, []}},
                #{id => vmq_warden_cluster_sync, start => {vmq_warden_cluster_sync, start_link, []}},
                %% after the sync process has keyed the username hash
                #{id => vmq_warden_rebuild, start => {vmq_warden_rebuild, start_link, []}}],
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, Children}}.
