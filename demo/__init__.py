"""`make demo` and the local-process clusters the integration tests use."""

import os

# These processes hold gRPC channels while they start child processes. Since
# grpcio 1.81 gRPC's fork handler restarts its poller in the forked child,
# where subprocess's close_fds then closes the epoll fd under it: the child
# aborts (SIGABRT, "epoll_wait error: Bad file descriptor") before exec
# (grpc/grpc#43055). Nothing here relies on gRPC surviving a fork, so turn
# fork support off before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
