"""The export stage (`mnad export MODEL --format onnx --out FILE`): a trained model as a graph
that another runtime executes, the memory an explicit input and the test-time update left to
that runtime.

- :mod:`.config` (driver): :class:`ExportConfig`, the options;
- :mod:`.graph` (anywhere, torch only): :class:`ReadGraph`, what the graph computes, and the
  names of its inputs and outputs;
- :mod:`.to_onnx` (driver): :func:`onnx_bytes`, the graph as an ONNX model with its metadata,
  and :func:`verify`, the model run in ONNX Runtime against torch;
- :mod:`.driver` (driver): :func:`run_export`, MODEL resolved, fetched, loaded weights-only,
  exported, checked and written, with :class:`ExportResult`.
"""

from pipelines.stage import exports

_MODULES = {
    "config": ("FORMATS", "OPSET", "ExportConfig"),
    "driver": ("ExportResult", "run_export"),
    "graph": ("INPUTS", "OUTPUTS", "GraphOutput", "ReadGraph"),
    "to_onnx": ("metadata", "onnx_bytes", "sample_inputs", "verify"),
}

__getattr__ = exports(__name__, _MODULES)
__all__ = sorted(name for names in _MODULES.values() for name in names)
