#!/bin/sh
# How the shipped models were trained (2-core CPU, no ImageNet weights, so the random-feature loss network).
# Run from the repository root with ../shared/data beside it; each stage checkpoints, so an interrupted run goes on
# with `styler train --resume <checkpoint-dir>/step-NNNNNNN.ckpt`. Then models/ship.py copies each into models/.
#
# Stage 1 reconstructs photos (style weight 0: only the content term, which is cheap): a network trained from
# scratch for a few hundred steps on the style loss forgets the photo (measured: blobs of the palette and no
# content at step 200), while one that starts from a reconstruction keeps it. Stage 2 adds the style, with the
# painting scaled to 256 px: the random filters see ~44 px, so a painting at its own ~1000 px gives them colour
# fields where at 256 px it gives strokes (models/tuning/style-size.jpg).
set -eu
STYLES=${STYLES:-../shared/data/styles}
DATA=${DATA:-../shared/data/train}
OUT=${OUT:-runs/ship}
train() { .venv/bin/styler train --data "$DATA" --loss-net random --workers 1 "$@"; }

# Stage 1: one reconstruction network per architecture (the style image only calibrates the random features).
train --arch lite --style "$STYLES/vangogh_starry_night.jpg" --style-weight 0 --lr 0.01 --batch-size 4 \
    --max-steps 300 --out "$OUT/lite-recon.pth" --checkpoint-dir "$OUT/lite-recon"
train --arch johnson --style "$STYLES/vangogh_starry_night.jpg" --style-weight 0 --lr 0.01 --batch-size 4 \
    --max-steps 86 --out "$OUT/johnson-recon.pth" --checkpoint-dir "$OUT/johnson-recon"

# Stage 2: the styles, each from its architecture's reconstruction network.
STAGE2="--style-weight 10 --lr 0.003 --batch-size 2 --style-size 256 --checkpoint-every 50"
for pair in vangogh_starry_night:starry hokusai_great_wave:wave kandinsky_composition_vii:kandinsky; do
    image=${pair%%:*} name=${pair##*:}
    train --arch johnson --style "$STYLES/$image.jpg" --init "$OUT/johnson-recon.pth" --max-steps 150 $STAGE2 \
        --out "$OUT/$name.pth" --checkpoint-dir "$OUT/$name"
    train --arch lite --style "$STYLES/$image.jpg" --init "$OUT/lite-recon.pth" --max-steps 150 $STAGE2 \
        --out "$OUT/$name-lite.pth" --checkpoint-dir "$OUT/$name-lite"
done
# All three styles in one conditional-instance-norm network: styles take turns, one per step.
train --arch johnson --style "$STYLES/vangogh_starry_night.jpg" --style "$STYLES/hokusai_great_wave.jpg" \
    --style "$STYLES/kandinsky_composition_vii.jpg" --init "$OUT/johnson-recon.pth" --max-steps 480 $STAGE2 \
    --out "$OUT/mix.pth" --checkpoint-dir "$OUT/mix"

# Into models/ (float16) with manifest entries.
ship() { .venv/bin/python models/ship.py "$@"; }
for name in starry wave kandinsky; do
    ship "$OUT/$name.pth" --name "$name" --style-names "$name" --description "johnson network, 1.68M parameters"
    ship "$OUT/$name-lite.pth" --name "$name-lite" --style-names "$name" \
        --description "lite network, 71.5k parameters: fast on a CPU"
done
ship "$OUT/mix.pth" --name mix --style-names starry,wave,kandinsky \
    --description "johnson network holding all three styles: --style starry, or blend: --style starry=0.5,wave=0.5"
