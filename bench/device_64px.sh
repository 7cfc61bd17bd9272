#!/usr/bin/env bash
# One lease of a GPU machine for the 64 px work (issue #14), everything at once so that the
# lease is short: the 64 px pretraining sweep, the paper table with realism columns (guard off,
# and guard on for one seed), and the `paper` preset through one offline experiment.
# Usage there: bash bench/device_64px.sh OUT_DIR SECONDS   (SECONDS: wall-clock budget)
set -u
out=${1:?output folder}
budget=${2:-480}
export PYTHONUNBUFFERED=1
mkdir -p "$out" var
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
python3 -c 'import torch; print(torch.__version__, torch.cuda.is_available())' >> "$out/gpu.txt"

timeout -s INT "$budget" python3 -m bench.pretrain_sweep --device cuda --out var/sweep \
    > "$out/sweep.log" 2>&1 &
timeout -s INT "$budget" python3 -m bench.paper_table --group all --seeds 3 --jobs 6 \
    --threads 1 --name paper_table_gpu > "$out/table.log" 2>&1 &
timeout -s INT "$budget" python3 -m bench.paper_table --group all --seeds 1 --jobs 3 \
    --threads 1 --realism-weight 50 --name paper_table_guard > "$out/guard.log" 2>&1 &
timeout -s INT "$budget" python3 -m bench.paper_preset --device cuda \
    --pretrain-seconds $((budget / 2)) > "$out/paper.log" 2>&1 &
wait

tar czf "$out/results.tgz" bench/results/paper_table_gpu.* bench/results/paper_table_guard.* \
    bench/results/paper_preset.* var/sweep/sweep.json var/sweep/*/samples.png 2>/dev/null
tar cf - var/sweep/*/ship.pt 2>/dev/null | gzip > var/ships.tgz
split -b 15m var/ships.tgz "$out/ships.tgz.part-"
ls -la "$out"
