#!/bin/sh
# How the shipped models are trained on a 2-core CPU with the ImageNet VGG16 loss (`styler weights vgg16` first).
# Run from the repository root with ../shared/data beside it. Every stage checkpoints every 50 steps and this script
# resumes a stage from its newest checkpoint, so rerunning it after an interruption goes on where it stopped; a
# finished stage (its .pth exists) is skipped. Then tools/ship.py copies each model into models/.
#
# 1. recon: one johnson network that reconstructs photos (VGG content loss only, cheap: VGG16 up to relu2_2).
# 2. each painting from recon, with a 50-step ramp of the style weight (content first: a network trained straight at
#    full style weight from scratch paints a flat relief; from a reconstruction it keeps faces and buildings).
#    Batch 2 at 256 px: a batch-4 step takes ~8 s on this CPU's two cores, and twice the steps at batch 2 gain more.
# 3. mix: the three paintings in one conditional-instance-norm network, distilled from the three johnson models.
# 4. lite: each painting distilled from its johnson model, pixel by pixel, then through VGG16 features.
set -eu
STYLES=${STYLES:-../shared/data/styles}
DATA=${DATA:-../shared/data/train}
OUT=${OUT:-runs/vgg}
STEPS=${STEPS:-300}
styler=.venv/bin/styler

# stage NAME ARGS...: train $OUT/NAME.pth into $OUT/NAME/, resuming from the newest checkpoint there.
stage() {
    name=$1
    shift
    [ -f "$OUT/$name.pth" ] && return 0
    last=$(ls "$OUT/$name"/step-*.ckpt 2>/dev/null | tail -n 1 || true)
    if [ -n "$last" ]; then
        $styler train --resume "$last" --workers 1
    else
        $styler train --data "$DATA" --hold-out benchmarks/validation.txt --workers 1 --channels-last --checkpoint-every 50 --preview-every 50 --keep-checkpoints 20 \
            --out "$OUT/$name.pth" --checkpoint-dir "$OUT/$name" "$@"
    fi
}

stage recon --style "$STYLES/vangogh_starry_night.jpg" --style-weight 0 --lr 3e-3 --max-steps 120 --batch-size 4

for pair in vangogh_starry_night:starry hokusai_great_wave:wave kandinsky_composition_vii:kandinsky; do
    image=${pair%%:*} name=${pair##*:}
    stage "$name" --style "$STYLES/$image.jpg" --style-size 256 --init "$OUT/recon.pth" --batch-size 2 \
        --content-weight 1e5 --style-weight 3e8 --style-ramp 50 --max-steps "$STEPS"
done

# All three styles in one conditional-instance-norm network, distilled from the three johnson models (styles take
# turns, one per step). Trained with the VGG16 loss from the starry network instead, the three styles still looked
# alike after 157 steps: only the normalization parameters differ between styles, and they moved slowly.
stage mix --teacher "$OUT/starry.pth" --teacher "$OUT/wave.pth" --teacher "$OUT/kandinsky.pth" \
    --init "$OUT/recon.pth" --lr 3e-3 --batch-size 2 --max-steps "${MIX_STEPS:-300}"

# lite: each painting distilled from its johnson model. First pixel MSE against the teacher's outputs (cheap, no
# VGG16: the palette and composition, strokes blurred), then the teacher's outputs as VGG16 content and per-image
# Gram targets (--teacher with --loss-net vgg16), which puts the strokes back as texture the small network can make.
# The VGG16 loss against the painting itself instead gave a lite network a checkerboard of strokes over the photo.
for painting in starry wave kandinsky; do  # not $name: stage() sets it
    stage "$painting-lite-pixel" --arch lite --teacher "$OUT/$painting.pth" --lr 3e-3 --batch-size 2 --max-steps 200
    stage "$painting-lite" --arch lite --teacher "$OUT/$painting.pth" --loss-net vgg16 \
        --init "$OUT/$painting-lite-pixel.pth" --batch-size 2 --max-steps "${LITE_STEPS:-250}"
done
# The shipped wave-lite and kandinsky-lite had their feature stage extended to 500 and 400 steps (--resume) and then
# 150 steps more as a new run from that model: --init "$OUT/$painting-lite.pth" with the same teacher and loss.

# Into models/ (float16) with manifest entries, once benchmarks.quality says they beat what is shipped: SHIP=1.
[ "${SHIP:-0}" = 1 ] || exit 0
ship() { .venv/bin/python tools/ship.py "$@"; }
for name in starry wave kandinsky; do
    ship "$OUT/$name.pth" --name "$name" --style-names "$name" --description "johnson network, 1.68M parameters"
    ship "$OUT/$name-lite.pth" --name "$name-lite" --style-names "$name" \
        --description "lite network, 71.5k parameters: fast on a CPU"
done
ship "$OUT/mix.pth" --name mix --style-names starry,wave,kandinsky \
    --description "johnson network holding all three styles: --style starry, or blend: --style starry=0.5,wave=0.5"
