#!/bin/sh
# Build-time check of the GPU image: every shared library that ONNX Runtime's CUDA provider and
# faiss's GPU build link against resolves inside the image (from the NVIDIA wheels on
# LD_LIBRARY_PATH), so a wheel that stops shipping a library fails the build, not the first
# request on a GPU. libcuda.so.1 is the exception: the host's driver, mounted at run time by the
# NVIDIA Container Toolkit. Also `pip check`, where the only complaints allowed are gaitid's
# onnxruntime and faiss-cpu: the GPU builds (onnxruntime-gpu, faiss-gpu-cu12) stand in for them.
set -eu
status=0
unexpected=$(pip check | grep -v -E '^gaitid [^ ]+ requires (onnxruntime|faiss-cpu), which is not installed\.$' \
    | grep -v '^No broken requirements found\.$' || true)
if [ -n "$unexpected" ]; then echo "pip check:"; echo "$unexpected"; status=1; fi
old_ifs=$IFS; IFS=:
for dir in $LD_LIBRARY_PATH; do
    [ -d "$dir" ] || { echo "LD_LIBRARY_PATH names a missing folder: $dir"; status=1; }
done
IFS=$old_ifs
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
checked=0
for library in "$site"/onnxruntime/capi/libonnxruntime_providers_cuda.so "$site"/faiss/_swigfaiss*.so; do
    [ -f "$library" ] || { echo "missing: $library"; status=1; continue; }
    missing=$(ldd "$library" | grep 'not found' | grep -v '^\s*libcuda\.so\.1 ' || true)
    if [ -n "$missing" ]; then echo "$library cannot find:"; echo "$missing"; status=1; fi
    checked=$((checked + 1))
done
echo "checked $checked GPU libraries"
python -c "
import faiss, onnxruntime
assert 'CUDAExecutionProvider' in onnxruntime.get_available_providers(), onnxruntime.get_available_providers()
assert hasattr(faiss, 'StandardGpuResources'), 'faiss is not the GPU build'
print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), '| faiss', faiss.__version__, 'GPU build')
" || status=1
exit $status
