"""Arbitrary style transfer (Huang & Belongie 2017): any painting as a style, in one forward pass.

The ImageNet VGG16 encodes the photo and the painting up to one layer (network.CONTENT_LAYER); adaptive instance
normalization on our kernels (adain.py) gives the photo's features the painting's per-channel mean and standard
deviation; a decoder trained here (training.py) turns them back into an image. model_file.py reads and writes the
decoder's model file, stylizer.py applies it to photos with each painting's statistics cached.
"""
