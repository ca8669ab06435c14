#!/usr/bin/env bash
# Programs the citation tests compare the exports with; safe to run again (installs only what is missing).
#  * TeX Live from Debian: pdflatex (texlive-latex-base), etoolbox and friends that biblatex loads
#    (texlive-latex-recommended), biblatex (texlive-bibtex-extra), biber; bibtex and the classic styles
#    come with texlive-base, a dependency of these.
#  * citeproc-js from npm, pinned in tests/citations/citeproc/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v pdflatex >/dev/null || missing+=(texlive-latex-base)
command -v biber >/dev/null || missing+=(biber)
kpsewhich etoolbox.sty >/dev/null 2>&1 || missing+=(texlive-latex-recommended)
kpsewhich biblatex.sty >/dev/null 2>&1 || missing+=(texlive-bibtex-extra)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -d tests/citations/citeproc/node_modules/citeproc ]; then
  (cd tests/citations/citeproc && npm ci --no-audit --no-fund)
fi
