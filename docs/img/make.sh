#!/usr/bin/env bash
# Redraw the quickstart pictures of the README and the docs site (docs/img/) from a finished run:
#   python -m tdmpc2_model.apps.quickstart --out runs/quickstart && docs/img/make.sh runs/quickstart
# The evaluation (tdmpc2-eval, 4 tasks x 1 episode) is made once into QUICKSTART/qs-eval.
set -euo pipefail
qs=${1:-runs/quickstart}
img=$(dirname "$0")
[ -f "$qs/qs-eval/eval.json" ] || tdmpc2-eval --checkpoint "$qs/pretrain/final" \
    --tasks cartpole-balance,reacher-easy,mw-reach,mw-door-open --episodes 1 --out "$qs/qs-eval"
tdmpc2-plot scores "$qs/qs-eval" --out "$img/scores.png"
tdmpc2-plot embeddings --checkpoint "$qs/pretrain/final" --out "$img/embeddings.png"
tdmpc2-plot losses "$qs/pretrain" --out "$img/losses.png"
