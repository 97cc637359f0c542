"""Deployment to AWS EC2: provisioning (boto3 or Terraform) and the hosts inventory.

* :mod:`deploy.aws` - ``provision`` / ``destroy`` with boto3.
* :mod:`deploy.hosts` - :func:`load_hosts` reads the hosts of either path.
* :mod:`deploy.cli` - the ``cl-deploy`` command and how to add subcommands.
"""

from deploy.errors import DeployError
from deploy.hosts import Host, Inventory, load_hosts

__all__ = ["DeployError", "Host", "Inventory", "load_hosts"]
