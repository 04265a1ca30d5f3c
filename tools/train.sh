#!/bin/sh
# How the shipped models are trained on a 2-core CPU with the ImageNet VGG16 loss (`styler weights vgg16` first).
# Run from the repository root with ../shared/data beside it. Every stage checkpoints every 50 steps and this script
# resumes a stage from its newest checkpoint, so rerunning it after an interruption goes on where it stopped; a
# finished stage (its .pth exists) is skipped. Then tools/ship.py copies each model into models/. The validation
# photos (benchmarks/validation.txt) are held out of every stage. On a CPU with AMX or AVX-512 BF16 the stages run
# under bfloat16 autocast (--amp), about 3x faster there; elsewhere in float32.
#
# 1. base: one johnson network that reconstructs photos (VGG content loss only, cheap: VGG16 up to relu2_2); shipped
#    as models/base.pth, where `styler train` starts by default.
# 2. each painting from base with the defaults (style 1e9, colour 5e8, a 50-step style ramp, batch 4): starry and
#    wave 400 steps, kandinsky the defaults' 3 epochs (285 steps), the painting nobody tuned a setting on.
# 3. mix: the three paintings in one conditional-instance-norm network, distilled from the three johnson models.
# 4. lite: each painting distilled from its johnson model through VGG16 features, from the shipped lite model.
set -eu
STYLES=${STYLES:-../shared/data/styles}
DATA=${DATA:-../shared/data/train}
OUT=${OUT:-runs/vgg}
STEPS=${STEPS:-400}
styler=.venv/bin/styler
AMP=$(.venv/bin/python -c "from styler.devices import cpu_has_bfloat16; print('--amp' if cpu_has_bfloat16() else '')")

# stage NAME ARGS...: train $OUT/NAME.pth into $OUT/NAME/, resuming from the newest checkpoint there.
stage() {
    name=$1
    shift
    [ -f "$OUT/$name.pth" ] && return 0
    last=$(ls "$OUT/$name"/step-*.ckpt 2>/dev/null | tail -n 1 || true)
    if [ -n "$last" ]; then
        $styler train --resume "$last" --workers 1
    else
        $styler train --data "$DATA" --hold-out benchmarks/validation.txt --workers 1 --channels-last $AMP \
            --checkpoint-every 50 --preview-every 50 --keep-checkpoints 20 \
            --out "$OUT/$name.pth" --checkpoint-dir "$OUT/$name" "$@"
    fi
}

stage base --style "$STYLES/vangogh_starry_night.jpg" --style-weight 0 --color-weight 0 --lr 3e-3 --max-steps 400 --batch-size 4 \
    --init none --content-steps 0

stage starry --style "$STYLES/vangogh_starry_night.jpg" --init "$OUT/base.pth" --max-steps "$STEPS"
stage wave --style "$STYLES/hokusai_great_wave.jpg" --init "$OUT/base.pth" --max-steps "$STEPS"
stage kandinsky --style "$STYLES/kandinsky_composition_vii.jpg" --init "$OUT/base.pth"  # the defaults, as they are

# All three styles in one conditional-instance-norm network, distilled from the three johnson models (styles take
# turns, one per step). Trained with the VGG16 loss from the starry network instead, the three styles still looked
# alike after 157 steps: only the normalization parameters differ between styles, and they moved slowly.
stage mix --teacher "$OUT/starry.pth" --teacher "$OUT/wave.pth" --teacher "$OUT/kandinsky.pth" --loss-net vgg16 \
    --init "$OUT/base.pth" --batch-size 4 --max-steps "${MIX_STEPS:-240}"

# lite: each painting distilled from its johnson model through VGG16 features (the teacher's outputs as content and
# per-image Gram targets, style 3e8, the default with --teacher --loss-net vgg16), starting from the shipped lite
# model of the same painting. The former first stage, pixel MSE against the teacher's outputs, blurred the bold
# strokes of these teachers to grey, and the feature stage then ended as an embossed relief; the VGG16 loss against
# the painting itself gave a lite network horizontal hatching.
for painting in starry wave kandinsky; do  # not $name: stage() sets it
    stage "$painting-lite" --arch lite --teacher "$OUT/$painting.pth" --loss-net vgg16 \
        --init "models/$painting-lite.pth" --batch-size 2 --max-steps "${LITE_STEPS:-200}"
done

# Into models/ (float16) with manifest entries, once benchmarks.quality says they beat what is shipped: SHIP=1.
[ "${SHIP:-0}" = 1 ] || exit 0
ship() { .venv/bin/python tools/ship.py "$@"; }
ship "$OUT/base.pth" --base
for name in starry wave kandinsky; do
    ship "$OUT/$name.pth" --name "$name" --style-names "$name" --description "johnson network, 1.68M parameters"
    ship "$OUT/$name-lite.pth" --name "$name-lite" --style-names "$name" \
        --description "lite network, 71.5k parameters: fast on a CPU"
done
ship "$OUT/mix.pth" --name mix --style-names starry,wave,kandinsky \
    --description "johnson network holding all three styles: --style starry, or blend: --style starry=0.5,wave=0.5"
