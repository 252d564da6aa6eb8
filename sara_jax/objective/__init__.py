"""The training objective, as the paper writes it: one named function per equation.

| Eq. | quantity                                      | function                        |
| --- | --------------------------------------------- | ------------------------------- |
| 1   | z_enc = E(X_0), the frozen encoder's tokens   | `sara.encoder_targets`          |
| 2   | x_t = (1 - t) x_0 + t eps; v = eps - x_0      | `transport.interpolate`,        |
|     |                                               | `transport.velocity_target`     |
| 3   | L_velocity                                    | `losses.velocity_loss`          |
| 4   | z_den, the SiT's state after block k          | `sara.denoiser_forward`         |
| 5   | h_den = M_proj(z_den)                         | `sara.project`                  |
| 6   | L_patch                                       | `losses.patch_alignment_loss`   |
| 7   | A(h), the autocorrelation matrix              | `losses.autocorrelation`        |
| 8   | L_struc                                       | `losses.structural_loss`        |
| 9   | L_D                                           | `losses.discriminator_loss`,    |
|     |                                               | `sara.disc_objective`           |
| 10  | L_adv                                         | `losses.adversarial_loss`       |
| 11  | L_velocity + lambda L_patch + beta L_struc    | `sara.generator_loss`           |
|     | + gamma L_adv                                 |                                 |
| -   | iREPA's z-scored targets (`loss.encoder_norm`)| `losses.spatial_zscore`,        |
|     |                                               | `sara.alignment_targets`        |

`family` holds each model family's denoising term (SiT: Eq. 2-3; DiT: DDPM's L_simple + L_vlb
from `diffusion`) and the diffusion inputs of one example. The train step (`training.step`)
differentiates `sara.generator_loss` and `sara.disc_objective`; it adds no term of its own.
"""
