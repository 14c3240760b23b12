# Sourced by the device scripts (bench/results/nvidia-h200*/run.sh) on a lent machine with an
# NVIDIA GPU and no network: unpacks the carried Debian packages (.gl/, see machine.txt), points
# the Vulkan loader at the driver's ICD and OpenCL's vendors folder at the driver's library, and
# links /work/main to the checkout (CTest's files name the build by its absolute path). First
# what every such script shares: $out ($OUT, the folder that comes back, or /tmp/moe-device-out)
# with a json/ folder, everything printed from here on also in $out/log.txt, and step(), a
# timed header per step.
out=${OUT:-/tmp/moe-device-out}
mkdir -p "$out/json"
exec > >(tee -a "$out/log.txt") 2>&1
step() { echo; echo "=== $(date -u +%T) $*"; }
step "loaders"
# The Vulkan loader and the GL dispatch libraries the NVIDIA driver's ICD needs go to / (the
# device notes' recipe); cJSON and the OpenCL ICD loader stay beside it.
for f in .gl/libvulkan1_*.deb .gl/libglvnd0_*.deb .gl/libegl1_*.deb .gl/libgl1_*.deb \
    .gl/libglx0_*.deb .gl/libopengl0_*.deb .gl/libgles2_*.deb; do
    [ -f "$f" ] && dpkg -x "$f" /
done
mkdir -p /tmp/deps
for f in .gl/libcjson1_*.deb .gl/ocl-icd-libopencl1_*.deb; do dpkg -x "$f" /tmp/deps; done
ldconfig
nv=/usr/local/nvidia
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:$nv/lib64:$nv/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
ls -l /usr/share/vulkan/icd.d /etc/vulkan/icd.d $nv/share/vulkan/icd.d /etc/OpenCL/vendors 2>&1
cat $nv/share/vulkan/icd.d/nvidia_icd.json 2>&1
ls $nv $nv/lib64 2>&1 | head -80 | tr '\n' ' '; echo
export VK_DRIVER_FILES=$nv/share/vulkan/icd.d/nvidia_icd.json __EGL_VENDOR_LIBRARY_FILENAMES=$nv/share/glvnd/egl_vendor.d/10_nvidia.json
export VK_ICD_FILENAMES=$VK_DRIVER_FILES
# The driver's OpenCL ICD, when it has one, replaces any CPU implementation (PoCL) in the
# vendors folder, so that the OpenCL tests and runs are the GPU's.
lib=$(find $nv /usr/lib/x86_64-linux-gnu /usr/lib64 -maxdepth 3 -name 'libnvidia-opencl.so*' 2>/dev/null | head -1)
echo "NVIDIA OpenCL ICD: ${lib:-none found}"
if [ -n "$lib" ]; then
    mkdir -p /etc/OpenCL/vendors /tmp/vendors-off
    mv /etc/OpenCL/vendors/*.icd /tmp/vendors-off/ 2>/dev/null
    echo "$lib" > /etc/OpenCL/vendors/nvidia.icd
fi
cat /etc/OpenCL/vendors/*.icd 2>&1
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
lscpu | grep -E '^(Model name|CPU\(s\)|L3)'
grep MemTotal /proc/meminfo
