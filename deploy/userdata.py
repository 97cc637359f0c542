"""cloud-init user data for the hosts: installs Docker Engine + Compose plugin.

`deploy/user_data.sh` is the one copy: Terraform reads it with `file()`, and
`cl-deploy provision` sends the same bytes, so hosts from either path are
alike. It works on Debian 12 (login user ``admin``) and Ubuntu 22.04
(``ubuntu``); on success it creates ``/var/lib/chandy-lamport/docker-ready``.
"""

from importlib.resources import files

USER_DATA = files("deploy").joinpath("user_data.sh").read_text(encoding="utf-8")
