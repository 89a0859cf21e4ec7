#!/usr/bin/env bash
# For machines with no GPU: makes sure a CPU Vulkan driver that Dawn accepts is installed, and prints the path of
# its ICD file.   export VK_ICD_FILENAMES=$(scripts/cpu-webgpu.sh)
# First choice: Mesa's lavapipe >= 24 (on Debian 12 from bookworm-backports; Debian 12's own 22.3 is too old for Dawn:
# "shaderUniform*ArrayDynamicIndexing required"): ~4-5x faster than SwiftShader here, and it has shader-f16.
# Fallback (LOCRET_CPU_VULKAN=swiftshader, or when lavapipe cannot be had): SwiftShader from Debian's chromium-common.
# Installs with apt-get: run as root (CI is). Prints only the path on stdout.
set -euo pipefail
want=${LOCRET_CPU_VULKAN:-lavapipe}
lvp=/usr/share/vulkan/icd.d/lvp_icd.json
mesa_ok() { [[ -f $lvp ]] && dpkg --compare-versions "$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo 0)" ge 24; }
if [[ $want == lavapipe ]] && ! mesa_ok; then
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  {
    if [[ $codename == bookworm ]]; then
      # the machine's own Debian mirror, with the backports suite added
      uri=$(grep -h -m1 -oP '^URIs:\s*\K\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
      [[ -n $uri ]] || uri=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
      echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bookworm-backports main" \
        > /etc/apt/sources.list.d/locret-backports.list
      apt-get update -qq && apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1
    else
      apt-get update -qq && apt-get install -y -qq mesa-vulkan-drivers libvulkan1
    fi
  } >&2 || true
fi
if [[ $want == lavapipe ]] && mesa_ok; then echo "$lvp"; exit 0; fi
# SwiftShader: only two files out of the chromium-common package, plus the Vulkan loader
if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
  { apt-get install -y -qq libvulkan1 || { apt-get update -qq && apt-get install -y -qq libvulkan1; }; } >&2
fi
dir=${LOCRET_SWIFTSHADER_DIR:-$HOME/.cache/swiftshader}
icd=$dir/usr/lib/chromium/vk_swiftshader_icd.json
if [[ ! -f $icd ]]; then
  mkdir -p "$dir" && cd "$dir"
  { apt-get download chromium-common || { apt-get update -qq && apt-get download chromium-common; }; } >&2
  dpkg-deb --fsys-tarfile chromium-common_*.deb | tar -x ./usr/lib/chromium/libvk_swiftshader.so ./usr/lib/chromium/vk_swiftshader_icd.json
  rm -f chromium-common_*.deb
fi
echo "$icd"
