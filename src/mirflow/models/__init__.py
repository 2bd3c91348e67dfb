"""Models: the registry of every model mirflow uses (files, sources, checksums, licences), download
and verification, Demucs lookup and cross-track batching, the VGGish front end and ONNX sessions."""
