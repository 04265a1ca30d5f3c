#!/bin/sh
# Train every shipped style in one go on a GPU, inside a fixed time budget (GPU time is lent here in ~15-minute
# slices, start-up included): tools/train_gpu.sh OUT_DIR [SECONDS]
#
# Same recipe as tools/train.sh (base, each painting from it with the default style and colour weights, mix, lite distilled from each
# johnson model, first pixel by pixel, then through VGG16 features) at batch 4 with --amp and channels_last, and many more steps. Each stage gets its share of the
# budget and is stopped with SIGTERM when it runs out, which makes styler save a checkpoint; the stage is then
# finished from that checkpoint (`--resume ... --max-steps` the step it reached), so every stage leaves a model.
# Everything lands in OUT_DIR: models (*.pth), checkpoints and previews (one folder per stage) and one log per stage.
#
# Environment: DEVICE (cuda), SCALE (1: multiplies every stage's steps), DATA, STYLES, STYLER (the command), and for a
# CPU trial run STEPS_CAP (at most this many steps a stage), LOSS_ARGS (e.g. "--vgg-weights FILE") and EXTRA (e.g.
# "--image-size 64 --workers 0").
set -eu
OUT=${1:?usage: tools/train_gpu.sh OUT_DIR [SECONDS]}
BUDGET=${2:-600}
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-1}
STYLES=${STYLES:-../shared/data/styles}
DATA=${DATA:-../shared/data/train}
STYLER=${STYLER:-.venv/bin/styler}  # may be several words, e.g. "python -m styler"
AMP=""
[ "$DEVICE" = cuda ] && AMP="--amp"
mkdir -p "$OUT"
START=$(date +%s)
STAGES=11  # base, three paintings, mix, three lite in two stages each

# stage NAME SHARE STEPS ARGS...: train OUT/NAME.pth for at most STEPS*SCALE steps and SHARE/STAGES of the budget.
stage() {
    name=$1 share=$2 steps=$(($3 * SCALE))
    [ -n "${STEPS_CAP:-}" ] && [ "$steps" -gt "$STEPS_CAP" ] && steps=$STEPS_CAP
    shift 3
    [ -f "$OUT/$name.pth" ] && return 0
    left=$((BUDGET - ($(date +%s) - START)))
    seconds=$((BUDGET * share / STAGES))
    [ "$seconds" -gt "$left" ] && seconds=$left
    if [ "$seconds" -le 5 ]; then
        echo "train_gpu: no time left for $name" >&2
        return 0
    fi
    set +e
    # shellcheck disable=SC2086
    timeout -s TERM "$seconds" $STYLER train --data "$DATA" --device "$DEVICE" $AMP --channels-last \
        --checkpoint-every 200 --preview-every 500 --out "$OUT/$name.pth" --checkpoint-dir "$OUT/$name" \
        --max-steps "$steps" ${EXTRA:-} "$@" > "$OUT/$name.log" 2>&1
    status=$?
    set -e
    if [ ! -f "$OUT/$name.pth" ]; then  # stopped in time: write the model from the checkpoint it saved
        last=$(ls "$OUT/$name"/step-*.ckpt 2>/dev/null | tail -n 1 || true)
        if [ -z "$last" ]; then
            echo "train_gpu: $name stopped (status $status) before its first checkpoint; see $OUT/$name.log" >&2
            return 0
        fi
        reached=$(basename "$last" .ckpt | sed 's/^step-0*//')
        # shellcheck disable=SC2086
        $STYLER train --resume "$last" --max-steps "${reached:-0}" >> "$OUT/$name.log" 2>&1
    fi
    echo "train_gpu: $name done ($(($(date +%s) - START)) s since start)" >&2
}

# shellcheck disable=SC2086
stage base 1 400 --style "$STYLES/vangogh_starry_night.jpg" --style-weight 0 --color-weight 0 --lr 3e-3 --batch-size 4 --init none \
    --content-steps 0 ${LOSS_ARGS:-}
for pair in vangogh_starry_night:starry hokusai_great_wave:wave kandinsky_composition_vii:kandinsky; do
    image=${pair%%:*} name=${pair##*:}
    # shellcheck disable=SC2086
    stage "$name" 1 2000 --style "$STYLES/$image.jpg" --style-size 256 --init "$OUT/base.pth" --batch-size 4 \
        --style-ramp 200 ${LOSS_ARGS:-}
done
stage mix 2 3000 --teacher "$OUT/starry.pth" --teacher "$OUT/wave.pth" --teacher "$OUT/kandinsky.pth" \
    --init "$OUT/base.pth" --lr 3e-3 --batch-size 4
for painting in starry wave kandinsky; do  # not $name: stage() sets it
    stage "$painting-lite-pixel" 1 2000 --arch lite --teacher "$OUT/$painting.pth" --lr 3e-3 --batch-size 8
    # shellcheck disable=SC2086
    stage "$painting-lite" 1 3000 --arch lite --teacher "$OUT/$painting.pth" --loss-net vgg16 \
        --init "$OUT/$painting-lite-pixel.pth" --batch-size 4 ${LOSS_ARGS:-}
done
echo "train_gpu: all stages in $(($(date +%s) - START)) s; models in $OUT" >&2
