"""The diffusion schedule's step range and the default noise step, without torch: command lines, help texts and
argument checks read them here at once; `vdtrain.method.noise` builds the schedule from the same constant."""

NUM_TRAIN_TIMESTEPS = 1000  # VCD's DDPM schedule (sigmoid betas 1e-5 .. 5e-3): steps 0 .. 999
MAX_NOISE_STEP = NUM_TRAIN_TIMESTEPS - 1
DEFAULT_NOISE_STEP = 900  # the thesis' T (vd_noise_step, --noise-step)
