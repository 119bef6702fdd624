#!/usr/bin/env bash
# Re-pin requirements.txt and requirements-dev.txt from their .in files with
# pip-tools, installed in a throwaway venv so it never mixes with the project's.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=var/pip-tools
if [[ ! -x "$TOOLS/bin/pip-compile" ]]; then
  mkdir -p var
  .venv/bin/python -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet pip-tools
fi
compile() {
  local header="$1" in="$2" out="$3"
  # pip-compile keeps the pins it finds in its output file: start from the
  # current ones, so only what the .in change needs moves.
  [[ -f "$out" ]] && cp "$out" "$out.tmp"
  "$TOOLS/bin/pip-compile" --quiet --strip-extras --no-header --annotation-style line \
    --no-emit-index-url --no-emit-find-links --output-file "$out.tmp" "$in"
  { printf '%s\n' "$header"; cat "$out.tmp"; } >"$out"
  rm -f "$out.tmp"
}
compile "# Pinned runtime dependencies, generated from requirements.in by \`make requirements\`.
# Edit requirements.in, then regenerate; do not edit by hand." requirements.in requirements.txt
compile "# Pinned test and tooling dependencies, generated from requirements-dev.in by
# \`make requirements\` (constrained by requirements.txt). Do not edit by hand." \
  requirements-dev.in requirements-dev.txt
echo "requirements.txt and requirements-dev.txt re-pinned."
