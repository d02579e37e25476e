"""The deployment stage: the NetX HDF5 file (``netx_file``), the export and
the deployed fixed-point model (``export``), training-side fixed-point
inference (``reference``; its integer arithmetic: ``lava_dtss.fixed_point``), the
Lava runtime (``lava_runtime``; its processes: ``lava_dtss.lava_processes``),
the static Loihi 2 check (``loihi_check``) and the standard-process build
(``loihi_build``). Importing this package starts no Lava process."""
from .export import deployed_model, export_hdf5
from .netx_file import LayerSpec, NetSpec, NetXFormatError, read_netx, write_netx

__all__ = ['deployed_model', 'export_hdf5', 'LayerSpec', 'NetSpec', 'NetXFormatError', 'read_netx', 'write_netx']
