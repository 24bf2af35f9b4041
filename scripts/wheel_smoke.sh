#!/usr/bin/env bash
# The built wheel, installed apart from the source tree, used from an empty folder (`make wheel-smoke`, CI):
#  1. build the wheel of this checkout into dist/ (no network: the build uses the installed setuptools);
#  2. check that every file of the package that git tracks (modules, configs, the demo's reference table) is in it;
#  3. install it into a fresh venv (no pip download: the venv sees the dependencies of PYTHON's environment through a
#     .pth line, added after the install; the editable arn_lightning of that environment stays invisible, since the
#     .pth files of a directory named in a .pth line are not run) and check that arn_lightning comes from the wheel;
#  4. in an empty folder: configs list / show, synth, a tiny fit, test, evaluate, infer on a frame folder, the run
#     exported as a model folder (safetensors) whose infer lines equal the checkpoint's, `serve` on that folder
#     (answers HTTP 200 on 127.0.0.1, stops on SIGTERM with status 0 and its temporary folder removed), the demo
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

step "export a model folder; infer and serve from it"
arn-lightning export --checkpoint "$RUN/checkpoints/last.ckpt" --format safetensors --out model_folder >export.log 2>&1 \
  || { tail -30 export.log; exit 1; }
for file in model.safetensors config.json README.md; do
  [ -s "model_folder/$file" ] || { ls -la model_folder; echo "expected model_folder/$file"; exit 1; }
done
arn-lightning infer --checkpoint model_folder --input "$FOLDER" --out graphs_folder --quiet >infer_folder.log 2>&1 \
  || { tail -30 infer_folder.log; exit 1; }
"$VPY" -c '
import json, math, sys
def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
ckpt, folder = lines("graphs/scene_graphs.jsonl"), lines("graphs_folder/scene_graphs.jsonl")
def key(graphs):
    return [(g["frame"], [t[:3] for t in g["triplets"]], g["triplet_rows"]) for g in graphs]
scores = [(a[3], b[3]) for g, h in zip(ckpt, folder) for a, b in zip(g["triplets"], h["triplets"])]
if not ckpt or key(ckpt) != key(folder) or not all(math.isclose(a, b, abs_tol=1e-4) for a, b in scores):
    sys.exit("[wheel-smoke] Expected the model folder to give the checkpoint'"'"'s scene graphs but they differ")
print(f"[wheel-smoke] model folder: the same {len(ckpt)} frames and {len(scores)} triplets as the checkpoint")'
PORT=$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
arn-lightning serve --checkpoint model_folder --root data --host 127.0.0.1 --port "$PORT" >serve.log 2>&1 &
SERVER=$!
"$VPY" -c '
import sys, time, urllib.request
url, deadline = f"http://127.0.0.1:{sys.argv[1]}/", time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            if answer.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"[wheel-smoke] Expected {url} to answer 200 within 120 s but it did not")
    time.sleep(1)
print(f"[wheel-smoke] serve answers 200 at {url}")' "$PORT" || { kill "$SERVER"; tail -30 serve.log; exit 1; }
kill -TERM "$SERVER"
STATUS=0
wait "$SERVER" || STATUS=$?
[ "$STATUS" = 0 ] || { tail -30 serve.log; echo "expected serve to exit 0 on SIGTERM but got $STATUS"; exit 1; }
SERVE_TEMP=$(sed -n 's/.*(temporary files in \([^;]*\);.*/\1/p' serve.log)
[ -n "$SERVE_TEMP" ] && [ ! -e "$SERVE_TEMP" ] \
  || { cat serve.log; echo "expected serve to remove its temporary folder '$SERVE_TEMP'"; exit 1; }

step "the demo job (tiny size) and the ablation's Table 4 (tiny size, one seed)"
arn-lightning demo --out demo --videos 16 --frames 4 --no-check >demo.log 2>&1 || { tail -30 demo.log; exit 1; }
grep -q "README table: not compared" demo.log && [ -s demo/summary.json ]
arn-lightning ablate --rows t4 --seeds 1 --size tiny --out ablation >ablate.log 2>&1 || { tail -30 ablate.log; exit 1; }
[ -s ablation/ablation.md ]
step "passed in $((SECONDS - start)) s"
