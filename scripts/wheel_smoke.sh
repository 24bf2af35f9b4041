#!/usr/bin/env bash
# The built wheel, installed apart from the source tree, used from an empty folder (`make wheel-smoke`, CI):
#  1. build the wheel of this checkout into dist/ (no network: the build uses the installed setuptools);
#  2. check that every file of the package that git tracks (modules, configs, the demo's reference table) is in it;
#  3. install it into a fresh venv (no pip download: the venv sees the dependencies of PYTHON's environment through a
#     .pth line, added after the install; the editable arn_lightning of that environment stays invisible, since the
#     .pth files of a directory named in a .pth line are not run) and check that arn_lightning comes from the wheel;
#  4. in an empty folder: configs list / show, synth, a tiny fit, test, evaluate, infer on a frame folder, the demo
#     job at a tiny size, and one ablation table at the tiny size.
# Any missing package file fails one of these steps. PYTHON (default .venv/bin/python, else python3) names the
# environment; KEEP=1 keeps the work folder.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOUT=$PWD
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
PYTHON=$(command -v "$PYTHON")
unset PYTHONPATH
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled
WORK=$(mktemp -d "${TMPDIR:-/tmp}/arn-wheel-smoke.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
step() { echo "[wheel-smoke] $*"; }
start=$SECONDS

step "building the wheel into $WORK/dist"
LEFT=()  # what setuptools leaves in the checkout (git-ignored), removed unless it was there before
for made in build src/arn_lightning.egg-info; do [ -e "$made" ] || LEFT+=("$made"); done
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" . >/dev/null
WHEEL=$(ls "$WORK"/dist/arn_lightning-*.whl)
rm -rf ${LEFT[@]+"${LEFT[@]}"}

step "checking that every tracked package file is in $(basename "$WHEEL")"
git ls-files src/arn_lightning | "$PYTHON" -c '
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
tracked = [line.strip()[len("src/"):] for line in sys.stdin if line.strip()]
missing = [name for name in tracked if name not in names]
if missing:
    sys.exit(f"[wheel-smoke] Expected every tracked package file in the wheel but {len(missing)} are missing: {missing}")
print(f"[wheel-smoke] {len(tracked)} package files, all in the wheel")' "$WHEEL"

step "installing it into a fresh venv"
"$PYTHON" -m venv --without-pip "$WORK/venv"
VPY=$WORK/venv/bin/python
"$PYTHON" -m pip --python "$VPY" install -q --no-deps --no-index "$WHEEL"
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$SITE/zz_dependencies.pth"
mkdir "$WORK/empty"
cd "$WORK/empty"
"$VPY" -c "
import arn_lightning, arn_lightning.configs as c, sys
where = arn_lightning.__path__[0]
if not where.startswith('$WORK/venv/') or str(c.config_folder()).startswith('$CHECKOUT'):
    sys.exit(f'[wheel-smoke] Expected arn_lightning from the fresh venv but it comes from {where}')
print(f'[wheel-smoke] arn_lightning {arn_lightning.__version__} from {where}')"
export PATH=$WORK/venv/bin:$PATH

step "configs"
arn-lightning configs list >configs.txt
EXPECTED=$(cd "$CHECKOUT/src/arn_lightning/configs" && find . -name '*.yaml' | wc -l)
grep -q "^($EXPECTED configs in $WORK/venv/" configs.txt || { cat configs.txt; echo "expected $EXPECTED configs"; exit 1; }
arn-lightning configs show trainer/gpu_bf16 | grep -q "precision: bf16-mixed"

step "synth, fit, test, evaluate, infer"
arn-lightning synth --root data --videos 16 --frames 4 --size 160x120 >/dev/null
TINY=$("$VPY" -c "from arn_lightning.experiments.ablation import SIZES; print(' '.join(SIZES['tiny'].overrides))")
# shellcheck disable=SC2086  # TINY is a list of arguments
arn-lightning fit --config synthetic_demo --config trainer/cpu --data.root data \
  --trainer.logger.init_args.save_dir runs $TINY >fit.log 2>&1 || { tail -30 fit.log; exit 1; }
RUN=$(dirname "$(dirname "$(ls runs/*/*/checkpoints/last.ckpt)")")
arn-lightning test --config "$RUN/config.yaml" --ckpt_path "$RUN/checkpoints/last.ckpt" >test.log 2>&1 \
  || { tail -30 test.log; exit 1; }
arn-lightning evaluate --root data --predictions "$RUN/test/predictions_test.jsonl" >evaluate.log
FOLDER=$(ls -d data/frames/*/ | head -1)
arn-lightning infer --checkpoint "$RUN/checkpoints/last.ckpt" --input "$FOLDER" --out graphs --quiet >infer.log 2>&1 \
  || { tail -30 infer.log; exit 1; }
[ -s "$(ls graphs/*.jsonl | head -1)" ]

step "the demo job (tiny size) and the ablation's Table 4 (tiny size, one seed)"
arn-lightning demo --out demo --videos 16 --frames 4 --no-check >demo.log 2>&1 || { tail -30 demo.log; exit 1; }
grep -q "README table: not compared" demo.log && [ -s demo/summary.json ]
arn-lightning ablate --rows t4 --seeds 1 --size tiny --out ablation >ablate.log 2>&1 || { tail -30 ablate.log; exit 1; }
[ -s ablation/ablation.md ]
step "passed in $((SECONDS - start)) s"
