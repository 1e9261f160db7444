"""s3prl hub entries for robustdistiller models.

s3prl finds upstreams by star-importing ``s3prl/upstream/<name>/hubconf.py`` into ``s3prl.hub``.
Create ``s3prl/upstream/robust_distiller/hubconf.py`` containing
``from robustdistiller.export.hubconf import *`` and add
``from s3prl.upstream.robust_distiller.hubconf import *`` to ``s3prl/hub.py``; then
``run_downstream.py -u robust_distiller_local -k model.ckpt`` works (see docs/interop.md).
"""

from robustdistiller.export.upstream import robust_distiller_local

__all__ = ["robust_distiller_local"]
