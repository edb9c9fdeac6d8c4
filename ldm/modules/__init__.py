"""The four networks of Stable Diffusion, written by hand: UNet, VAE, and the two text encoders."""
