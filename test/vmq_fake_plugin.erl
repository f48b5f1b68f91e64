%% @doc A second plugin in the test chain: it knows the user `fake-user'
%% (password `fake-pass') and says next to everyone else, so tests can show
%% that vmq_warden's `next' passes the decision on.
-module(vmq_fake_plugin).
-export([auth_on_register/5, auth_on_register_m5/6]).

auth_on_register(_Peer, _SubscriberId, <<"fake-user">>, <<"fake-pass">>, _Clean) -> ok;
auth_on_register(_Peer, _SubscriberId, _User, _Password, _Clean) -> next.

auth_on_register_m5(_Peer, _SubscriberId, <<"fake-user">>, <<"fake-pass">>, _Clean, _Props) -> ok;
auth_on_register_m5(_Peer, _SubscriberId, _User, _Password, _Clean, _Props) -> next.
