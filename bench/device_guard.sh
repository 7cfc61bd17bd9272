#!/usr/bin/env bash
# Second lease for issue #14: the paper table with tuning's realism guard at two weights (one
# seed each; WEIGHTS="5 15" picks others), after the first lease showed tuning worsens realism (bench/device_64px.sh).
set -u
out=${1:?output folder}
budget=${2:-240}
export PYTHONUNBUFFERED=1
for w in ${WEIGHTS:-50 200}; do
    timeout -s INT "$budget" python3 -m bench.paper_table --group all --seeds 1 --jobs 7 \
        --threads 1 --realism-weight "$w" --name "paper_table_guard$w" > "$out/guard$w.log" 2>&1 &
done
wait
tar czf "$out/guard.tgz" bench/results/paper_table_guard*
