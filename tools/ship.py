"""Add a trained model to models/: stored in float16 (float32 again on load), entered in manifest.json.

    .venv/bin/python tools/ship.py runs/starry.pth --name starry --description "..."

The manifest entry takes the training recipe from the model file itself and the style images' titles, artists and
licences from STYLE_IMAGES below (the three paintings in ../shared/data/styles, see its SOURCES.md). tools/train.sh
holds the commands that trained the shipped models.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from styler.errors import StylerError
from styler.io.files import sha256_of
from styler.model.architecture import architecture
from styler.model.model_files import (
    BASE_MODEL,
    load_model_file,
    manifest_entry,
    models_dir,
    read_manifest,
    save_model,
    write_manifest,
)
from styler.training.config import BASE_ARCH

_PUBLIC_DOMAIN = (
    "public domain (artist died more than 70 years ago; a faithful photograph of a 2-D work adds no copyright)"
)
# What the small encoder's weights derive from (styler/vgg16.py tells where those come from).
VGG16_CREDIT = (
    "distilled from the ImageNet VGG16 of Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale "
    "Image Recognition (2015), whose weights are published under CC BY 4.0"
)
STYLE_IMAGES = {
    "vangogh_starry_night.jpg": {
        "title": "The Starry Night (1889)",
        "artist": "Vincent van Gogh",
        "licence": _PUBLIC_DOMAIN,
        "source": "jcjohnson/neural-style examples/inputs/starry_night.jpg",
    },
    "hokusai_great_wave.jpg": {
        "title": "The Great Wave off Kanagawa (c. 1831)",
        "artist": "Katsushika Hokusai",
        "licence": _PUBLIC_DOMAIN,
        "source": "jcjohnson/fast-neural-style images/styles/wave.jpg",
    },
    "kandinsky_composition_vii.jpg": {
        "title": "Composition VII (1913)",
        "artist": "Wassily Kandinsky",
        "licence": _PUBLIC_DOMAIN,
        "source": "jcjohnson/fast-neural-style images/styles/composition_vii.jpg",
    },
}


def ship(trained: Path, name: str, description: str, directory: Path, style_names: list[str] | None = None) -> Path:
    """Copy `trained` into `directory` as <name>.pth in float16 and add (or replace) its manifest entry.

    `style_names` renames the styles (training names them after the image files) to what --style will accept.
    """
    model = load_model_file(trained)
    if style_names is not None:
        if len(style_names) != len(model.styles):
            raise StylerError(f"{len(style_names)} style names for a model with {len(model.styles)} styles")
        model.styles = style_names
    style_images = []
    for style, style_name in zip(model.training.get("styles", []), model.styles, strict=False):
        if style["image"] not in STYLE_IMAGES:
            raise StylerError(
                f"{trained}: no licence record for style image {style['image']!r}; add it to STYLE_IMAGES"
            )
        style_images.append({"name": style_name, "file": style["image"], **STYLE_IMAGES[style["image"]]})
    if len(style_images) != len(model.styles):
        raise StylerError(f"{trained}: its training record does not name the style image of every style")
    target = directory / f"{name}.pth"
    network = model.build()
    training = {**model.training, "data": "BSDS500 (397 photos; non-commercial research licence)"}
    if training.get("init"):  # the run it started from (tools/train.sh stage 1), so the recipe is complete
        init_file = trained.parent / training["init"]
        if not init_file.is_file():
            raise StylerError(f"{trained}: started from {training['init']}, which is not beside it to record")
        init = load_model_file(init_file).training
        keep = ("steps", "seconds", "lr", "batch_size", "image_size", "content_weight", "style_weight", "tv_weight")
        training["init_training"] = {key: init.get(key) for key in keep}
    save_model(target, network, model.styles, training, half=True)
    shipped = load_model_file(target)  # float16 round trip: the stored weights must still load and build
    shipped.build()
    # In shipping order (what `styler models` and the README grid show), a re-shipped model in its old place.
    entry = manifest_entry(target, name, style_images, description)
    entries = read_manifest(directory)
    names = [existing.name for existing in entries]
    if name in names:
        entries[names.index(name)] = entry
    else:
        entries.append(entry)
    write_manifest(entries, directory)
    return target


def ship_arbitrary(trained: Path, name: str, description: str, directory: Path) -> Path:
    """Copy an arbitrary-style model (`styler train-arbitrary`, or one of its checkpoints) into `directory` as
    <name>.pth, the decoder in float16, and enter it in the manifest as kind "arbitrary" with the paintings it
    trained with (for their licences; it works with any painting)."""
    from styler.arbitrary.model_file import SMALL_NETWORK, arbitrary_model_from, save_arbitrary_model
    from styler.arbitrary.network import CONTENT_LAYER
    from styler.model.model_files import ARBITRARY_KIND, ManifestEntry, is_arbitrary, read_model_contents

    contents = read_model_contents(trained)
    if not is_arbitrary(contents):
        raise StylerError(f"{trained}: not an arbitrary-style model or checkpoint")
    model = arbitrary_model_from(contents, trained)
    paintings = model.training.get("paintings", [])
    unknown = [painting for painting in paintings if painting not in STYLE_IMAGES]
    if unknown:
        raise StylerError(f"{trained}: no licence record for painting {unknown[0]!r}; add it to STYLE_IMAGES")
    training = {**model.training, "data": "BSDS500 (397 photos; non-commercial research licence)"}
    if training.get("init"):  # the decoder it started from: by name (not a path on the machine that trained it)
        init_file = next((f for f in (Path(training["init"]), trained.parent / training["init"]) if f.is_file()), None)
        training["init"] = Path(training["init"]).name
        if init_file is not None:  # and its own run in brief, where it is at hand
            init = arbitrary_model_from(read_model_contents(init_file), init_file).training
            keep = ("steps", "steps_done", "seconds", "lr", "style_weight", "init", "encoder")
            training["init_training"] = {key: init.get(key) for key in keep}
    target = directory / f"{name}.pth"
    save_arbitrary_model(target, model.build(), training, half=True, encoder=model.encoder)
    shipped = arbitrary_model_from(read_model_contents(target), target)  # the float16 round trip must still build
    shipped.build()
    entry = ManifestEntry(
        name=name,
        file=target.name,
        sha256=sha256_of(target),
        styles=[],
        style_images=[{"name": Path(p).stem, "file": p, **STYLE_IMAGES[p]} for p in paintings],
        arch={
            "encoder": "vgg16" if shipped.encoder is None else SMALL_NETWORK,
            # The small encoder is carried in the file; its weights derive from VGG16's (CC BY 4.0): credit them.
            **({} if shipped.encoder is None else {"encoder_width": shipped.encoder.width, "credit": VGG16_CREDIT}),
            "encoder_layer": CONTENT_LAYER,
            "decoder_width": shipped.decoder_width,
            "decoder_skips": list(shipped.decoder_skips),
        },
        training=training,
        styler_version=shipped.styler_version or "",
        description=description,
        kind=ARBITRARY_KIND,
    )
    entries = [existing for existing in read_manifest(directory) if existing.name != name]
    write_manifest([*entries, entry], directory)
    return target


def ship_base(trained: Path, directory: Path) -> Path:
    """Copy a reconstruction network (trained with --style-weight 0) into `directory` as the base model that
    `styler train` starts from by default, in float16; it is not a style, so it gets no manifest entry."""
    model = load_model_file(trained)
    if model.training.get("style_weight") != 0 or model.arch.num_styles != 1:
        raise StylerError(f"{trained}: not a one-network reconstruction run (--style-weight 0)")
    if replace(model.arch, num_styles=1) != architecture(BASE_ARCH):
        raise StylerError(f"{trained}: the base model must be the {BASE_ARCH} network")
    training = {**model.training, "styles": [], "data": "BSDS500 (386 photos; non-commercial research licence)"}
    target = directory / f"{BASE_MODEL}.pth"
    save_model(target, model.build(), ["photo"], training, half=True)
    load_model_file(target).build()  # float16 round trip
    return target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trained", type=Path, help="a model file written by styler train")
    parser.add_argument("--name", help="what users type: --model NAME")
    parser.add_argument("--base", action="store_true", help="ship it as the base model train starts from")
    parser.add_argument("--arbitrary", action="store_true", help="an arbitrary-style model (train-arbitrary)")
    parser.add_argument("--description", default="", help="one line for styler models")
    parser.add_argument("--style-names", help="comma-separated new names for the model's styles, in order")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: this repository's models/")
    arguments = parser.parse_args(argv)
    try:
        names = arguments.style_names.split(",") if arguments.style_names else None
        if arguments.base:
            print(ship_base(arguments.trained, arguments.models_dir or models_dir()))
            return 0
        if not arguments.name:
            raise StylerError("give --name (or --base)")
        if arguments.arbitrary:
            print(
                ship_arbitrary(
                    arguments.trained, arguments.name, arguments.description, arguments.models_dir or models_dir()
                )
            )
            return 0
        print(
            ship(arguments.trained, arguments.name, arguments.description, arguments.models_dir or models_dir(), names)
        )
    except StylerError as error:
        print(f"ship: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
