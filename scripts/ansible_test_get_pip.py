# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline stand-in for the get-pip.py script that ansible-test downloads to bootstrap pip into its venvs.

ansible-test fetches get-pip-<version>.py from a host these machines cannot reach, and uses a copy it finds at
~/.ansible/test/cache/get_pip_<version>.py instead (its documented workaround). scripts/test puts this file
there. Like get-pip.py it takes pip's install arguments (for example `pip==25.2 --no-setuptools --no-wheel`):
it bootstraps the pip bundled with Python (ensurepip), then lets that pip install the requested version from
the package index.
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY_OPTIONS = ('--no-setuptools', '--no-wheel')


def main() -> None:
    subprocess.run([sys.executable, '-m', 'ensurepip', '--default-pip'], check=True, stdout=subprocess.DEVNULL)
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    subprocess.run([sys.executable, '-m', 'pip', 'install', *args], check=True)


if __name__ == '__main__':
    main()
