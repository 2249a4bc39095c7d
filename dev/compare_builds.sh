#!/usr/bin/env bash
# Behaviour check across a change that should alter none: runs the same commands with two hnca
# binaries (BEFORE and AFTER) in two scratch directories and compares what they leave: every
# checkpoint, parameter file, PNG, SVG and eval JSON byte for byte; metrics files and printed
# lines with the wall-time fields removed; the help text of every subcommand; and the messages of
# a few mistakes. Prints the differences and exits non-zero if there are any.
#
#   dev/compare_builds.sh BEFORE_BINARY AFTER_BINARY
set -uo pipefail
before="$1"
after="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

run_all() {
    local bin="$1" dir="$2"
    mkdir -p "$dir"
    cd "$dir" || exit 1
    {
        for cmd in "" vae bandit eval sample plot bench selftest; do
            "$bin" $cmd --help
        done
        "$bin" vae --device cpu --layers 16,8 --batch-size 100 --epochs 3 --steps 700 --test-every 1 \
            --metrics vae.jsonl --save vae.ck --save-params vae.f32
        "$bin" vae --device cpu --layers 16,8 --batch-size 100 --epochs 3 --steps 900 --test-every 1 \
            --metrics vae.jsonl --save vae.ck --resume vae.ck --save-params vae-resumed.f32
        "$bin" vae --device cpu --layers 12 --batch-size 60 --steps 300 --estimator disarm --binarize threshold \
            --test-every 1 --metrics disarm.jsonl --save disarm.ck
        "$bin" vae --device cpu --layers 9,7 --batch-size 60 --steps 120 --estimator hnca --all-child --full-reward \
            --test-every 0 --metrics ablation.jsonl --save-params ablation.f32
        for est in loo reinforce-nb; do
            "$bin" vae --device cpu --layers 9,7 --batch-size 60 --steps 120 --estimator $est --test-every 0 \
                --metrics $est.jsonl --save-params $est.f32
        done
        "$bin" bandit --device cpu --layers 16,8 --batch-size 100 --epochs 2 --steps 700 --metrics bandit.jsonl \
            --save bandit.ck --save-params bandit.f32
        "$bin" bandit --device cpu --layers 16,8 --batch-size 100 --estimator reinforce --steps 200 \
            --metrics bandit-r.jsonl
        "$bin" eval --device cpu --checkpoint vae.ck --k 4 --images 200 --json > eval.json
        "$bin" sample --checkpoint vae.ck --out prior.png --rows 3 --cols 4
        "$bin" sample --checkpoint vae.ck --out recon.png --rows 2 --cols 2 --reconstruct
        "$bin" plot vae.jsonl disarm.jsonl --out vae.svg
        "$bin" plot bandit.jsonl bandit-r.jsonl --out bandit.png --width 600 --height 300
        # Mistakes: each a one-line message and an exit status.
        "$bin" vae --resume bandit.ck --layers 16,8 --steps 10; echo "status $?"
        "$bin" eval --checkpoint bandit.ck; echo "status $?"
        "$bin" vae --batch-size 0; echo "status $?"
        "$bin" bandit --layers 0; echo "status $?"
        "$bin" plot vae.jsonl bandit.jsonl --out x.svg; echo "status $?"
        "$bin" vae --device cpu --layers 16,8 --batch-size 100 --steps 10 --resume vae.ck --seed 3; echo "status $?"
    } > out.txt 2> err.txt
    # Wall time differs between runs: drop it from the printed lines and the metrics.
    sed -E -i 's/ [0-9.]+ steps\/s [0-9.]+s$//' out.txt
    # Each binary finds its own shipped data/ by default.
    sed -E -i 's/ images from .*$/ images from DATA/' err.txt
    for m in *.jsonl; do
        python3 -c 'import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l); d.pop("seconds",None); d.pop("steps_per_second",None); print(json.dumps(d,sort_keys=True))' "$m" > "$m.stable"
    done
    cd - > /dev/null || exit 1
}

run_all "$(realpath "$before")" "$work/before"
run_all "$(realpath "$after")" "$work/after"
status=0
for f in $(cd "$work/before" && ls); do
    case "$f" in *.jsonl) continue ;; esac
    if ! cmp -s "$work/before/$f" "$work/after/$f"; then
        echo "DIFFERS: $f"
        diff <(cat -v "$work/before/$f" | head -c 4000) <(cat -v "$work/after/$f" | head -c 4000) | head -20
        status=1
    fi
done
[ "$(cd "$work/before" && ls)" == "$(cd "$work/after" && ls)" ] || { echo "DIFFERS: the files written"; status=1; }
echo "compared: $(cd "$work/before" && ls | grep -v '\.jsonl$' | tr '\n' ' ')"
[ $status = 0 ] && echo "identical"
exit $status
