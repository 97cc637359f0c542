"""Deployment to AWS EC2: provisioning (boto3 or Terraform), then compose over ssh.

* :mod:`deploy.aws` - ``provision`` / ``destroy`` with boto3.
* :mod:`deploy.hosts` - :func:`load_hosts` reads the hosts of either path.
* :mod:`deploy.plan` - which host runs which service, and each host's files.
* :mod:`deploy.remote` - ``up`` / ``snapshot`` / ``fetch`` / ``status`` / ``down``.
* :mod:`deploy.cli` - the ``cl-deploy`` command and how to add subcommands.
"""

from deploy.errors import DeployError
from deploy.hosts import Host, Inventory, load_hosts

__all__ = ["DeployError", "Host", "Inventory", "load_hosts"]
