#!/usr/bin/env bash
# Debian packages the project needs beside its virtualenv, installed when missing (as root, as on
# CI and the project's machines). Usage: system_packages.sh PACKAGE=PATH-GLOB ...
#   ffmpeg      decodes the source formats soundfile cannot (M4A/AAC, WebM, MP4 audio)
#   chromium    the browser tests (driven by Playwright; its own browser download is not used)
#   postgresql  the PostgreSQL tier (a throwaway server that the tests start)
set -euo pipefail
updated=
for spec in "$@"; do
  package="${spec%%=*}" path="${spec#*=}"
  compgen -G "$path" >/dev/null && continue
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing $package"
    [ -n "$updated" ] || { apt-get update -qq >/dev/null; updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  else
    echo "setup: $package is missing (apt-get install $package); what needs it will fail" >&2
  fi
done
