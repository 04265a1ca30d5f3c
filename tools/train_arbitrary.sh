#!/bin/sh
# How the shipped arbitrary-style model (models/arbitrary.pth) was trained on one CPU core (`styler weights vgg16`
# first): the AdaIN decoder on the BSDS photos, with Starry Night and the Great Wave as its only paintings;
# Composition VII stays out, as the held-out painting of its figures. Four stages, each starting from the one
# before (--init), with the changes made on resuming as they were made (docs/arbitrary.md tells why), then the small
# encoder and the decoder fine-tuned to it:
#   1. plain    the paper's decoder (relu4_1 only), 2,400 steps: style weight 10 for 414 steps, then 5
#   2. skip     + skips at relu2_1 and relu3_1, content loss at relu4_1 only, style weight 10, 1,897 steps
#   3. content  + the content loss at every layer the decoder reads: style weight 10 for 850 steps, then 20, to 3,000
#   4. shipped  style weight 30, 1,500 steps (the model shipped until the small encoder)
#   5. encoder  the small encoder (half VGG16's channels) distilled from VGG16, 2,000 steps of 160 px crops
#   6. small    stage 4's decoder fine-tuned to read the small encoder, 1,000 steps (shipped until 4,500 below)
#   7. longer   stage 6 resumed to 3,000 steps, then to 4,500 (the cosine restarting higher each time)
#   8. encoder+ the encoder's distillation resumed to 5,000 steps (learning rate 3e-4), and stage 7's decoder
#               fine-tuned to it, 1,000 steps
#   9. encoder++ the same again to 8,000 steps, and stage 8's decoder fine-tuned to it, 1,000 steps: the shipped model
# (The learning rate's cosine followed the --steps of the day, which changed more often than this; not bit-exact.)
# Rerunning it continues where it stopped (each phase is skipped when its model file exists and resumed from its
# newest checkpoint when it has one). SHIP=1 copies the last model into models/.
set -eu
STYLES=${STYLES:-../shared/data/styles}
DATA=${DATA:-../shared/data/train}
OUT=${OUT:-runs/arbitrary}
styler=${STYLER:-.venv/bin/styler}

newest() { ls "$1"/step-*.ckpt 2>/dev/null | tail -n 1 || true; }

# phase OUT_FILE CHECKPOINT_DIR STEPS OPTIONS...: skipped when OUT_FILE exists; resumed from the newest checkpoint
# in CHECKPOINT_DIR when there is one (an interrupted phase, or the phase before it in the same folder, whose
# recipe it continues with OPTIONS' changes); a new run with OPTIONS otherwise.
phase() {
    target=$1 checkpoints=$2 steps=$3
    shift 3
    [ -f "$target" ] && return 0
    last=$(newest "$checkpoints")
    if [ -n "$last" ]; then
        $styler train-arbitrary --resume "$last" --steps "$steps" --out "$target" "$@"
    else
        $styler train-arbitrary --data "$DATA" --hold-out benchmarks/validation.txt \
            --painting "$STYLES/vangogh_starry_night.jpg" --painting "$STYLES/hokusai_great_wave.jpg" \
            --image-size 192 --batch-size 4 --checkpoint-dir "$checkpoints" --steps "$steps" --out "$target" "$@"
    fi
}

phase "$OUT/plain-414.pth" "$OUT/plain" 414 --skip none --style-weight 10
phase "$OUT/plain.pth" "$OUT/plain" 2400 --style-weight 5
phase "$OUT/skip.pth" "$OUT/skip" 1897 --init "$OUT/plain.pth" --style-weight 10 --no-skip-content
phase "$OUT/content-850.pth" "$OUT/content" 850 --init "$OUT/skip.pth" --style-weight 10
phase "$OUT/content.pth" "$OUT/content" 3000 --style-weight 20
phase "$OUT/shipped.pth" "$OUT/shipped" 1500 --init "$OUT/content.pth" --style-weight 30

# 5. the small encoder: VGG16's layout at half its channels, distilled from it (resumed like a phase)
if [ ! -f "$OUT/small-encoder.pth" ]; then
    last=$(newest "$OUT/encoder")
    if [ -n "$last" ]; then
        $styler distill-encoder --resume "$last" --out "$OUT/small-encoder.pth"
    else
        $styler distill-encoder --data "$DATA" --hold-out benchmarks/validation.txt \
            --painting "$STYLES/vangogh_starry_night.jpg" --painting "$STYLES/hokusai_great_wave.jpg" \
            --width 0.5 --steps 2000 --image-size 160 --batch-size 4 \
            --checkpoint-dir "$OUT/encoder" --out "$OUT/small-encoder.pth"
    fi
fi
# 6. the stage-4 decoder fine-tuned to read the small encoder (the losses still measured with VGG16)
phase "$OUT/small.pth" "$OUT/small" 1000 --init "$OUT/shipped.pth" --encoder "$OUT/small-encoder.pth" \
    --style-weight 30 --lr 2e-4
# 7. the same run, longer: resumed from stage 6's last checkpoint with more --steps, twice
phase "$OUT/small-3000.pth" "$OUT/small" 3000
phase "$OUT/small-4500.pth" "$OUT/small" 4500
# 8. the encoder distilled longer (its cosine restarted at 3e-4), then stage 7's decoder fine-tuned to it
if [ ! -f "$OUT/small-encoder-5000.pth" ]; then
    $styler distill-encoder --resume "$(newest "$OUT/encoder")" --steps 5000 --lr 3e-4 \
        --out "$OUT/small-encoder-5000.pth"
fi
phase "$OUT/small8.pth" "$OUT/small8" 1000 --init "$OUT/small-4500.pth" --encoder "$OUT/small-encoder-5000.pth" \
    --style-weight 30 --lr 2e-4
# 9. the encoder distilled on to 8,000 steps, then stage 8's decoder fine-tuned to it
if [ ! -f "$OUT/small-encoder-8000.pth" ]; then
    $styler distill-encoder --resume "$(newest "$OUT/encoder")" --steps 8000 --out "$OUT/small-encoder-8000.pth"
fi
phase "$OUT/small9.pth" "$OUT/small9" 1000 --init "$OUT/small8.pth" --encoder "$OUT/small-encoder-8000.pth" \
    --style-weight 30 --lr 2e-4
[ "${SHIP:-0}" = 1 ] || exit 0
.venv/bin/python tools/ship.py "$OUT/small9.pth" --arbitrary --name arbitrary \
    --description "any painting with --style-image: AdaIN on our kernels, a small encoder distilled from VGG16 (half its channels, to relu4_1; carried) + half-width decoder with skips"
