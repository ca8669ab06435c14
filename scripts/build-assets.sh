#!/usr/bin/env bash
# Install the front-end assets of the HTML pages from the npm registry and copy what the browser needs
# into service/web/static/, where the service serves it under /static. Nothing is loaded from a CDN.
#
#   scripts/build-assets.sh              # npm ci when web/package-lock.json exists, else npm install
#   scripts/build-assets.sh --if-changed # nothing to do when the lock file and this script are unchanged
#                                        # since the last run (a stamp beside the copied assets)
#
# The pages work without these assets: formulas are then shown as their LaTeX source.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
web="$root/web"
dest="$root/service/web/static/katex"

if ! command -v npm >/dev/null 2>&1; then
  echo "build-assets: npm is not installed; the pages will show formulas as LaTeX source" >&2
  exit 1
fi

stamp="$root/service/web/static/.assets-stamp"
digest="$(cat "$web/package.json" "$web/package-lock.json" "${BASH_SOURCE[0]}" 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [[ "${1:-}" == "--if-changed" && -f "$dest/katex.min.js" && "$(cat "$stamp" 2>/dev/null)" == "$digest" ]]; then
  exit 0
fi

cd "$web"
echo "assets: installing KaTeX and Swagger UI from npm"
if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi

dist="$web/node_modules/katex/dist"
for f in katex.min.js katex.min.css; do
  [[ -f "$dist/$f" ]] || { echo "build-assets: $dist/$f is missing" >&2; exit 1; }
done

rm -rf "$dest"
mkdir -p "$dest/fonts"
cp "$dist/katex.min.js" "$dist/katex.min.css" "$dest/"
cp "$dist"/fonts/* "$dest/fonts/"
cp "$web/node_modules/katex/LICENSE" "$dest/LICENSE" 2>/dev/null || true
version="$(node -p "require('$web/node_modules/katex/package.json').version" 2>/dev/null || echo unknown)"
echo "$version" > "$dest/VERSION"
echo "build-assets: KaTeX $version copied to ${dest#"$root"/}"

# Swagger UI for /docs, served locally as well
swagger="$web/node_modules/swagger-ui-dist"
sdest="$root/service/web/static/swagger"
if [[ -f "$swagger/swagger-ui-bundle.js" ]]; then
  rm -rf "$sdest"
  mkdir -p "$sdest"
  cp "$swagger/swagger-ui-bundle.js" "$swagger/swagger-ui.css" "$swagger/favicon-32x32.png" "$sdest/"
  cp "$swagger/LICENSE" "$sdest/LICENSE" 2>/dev/null || true
  echo "build-assets: Swagger UI copied to ${sdest#"$root"/}"
fi
echo "$digest" > "$stamp"
