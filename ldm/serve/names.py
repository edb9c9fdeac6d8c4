"""AUTOMATIC1111's sampler and scheduler names, onto the sampler table (samplers.SAMPLERS).

A1111 (1.9 and later) names a sampler ("DPM++ 2M") and, apart, a scheduler: the spacing of the
noise levels it walks ("Karras", "Uniform", or "Automatic": the sampler's own default, which is
Karras for DPM++ 2M). The table below is A1111 1.10's `sd_samplers.all_samplers`, in its order,
for the samplers this project has; the ones it lacks are refused by name (HTTP 422), never swapped
for another. Our k-diffusion samplers walk k-diffusion's own sigmas (A1111's "Uniform") or
Karras's (karras=True); A1111's other schedulers (Exponential, ...) are not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Refused


@dataclass(frozen=True)
class A1111Sampler:
    label: str  # A1111's name, as in its PNG text and its /samplers list
    ours: str  # the key of samplers.SAMPLERS
    aliases: tuple[str, ...]  # A1111's (k_euler_a, ...) and our registry name
    options: dict[str, str] = field(default_factory=dict)  # as A1111's /samplers lists them (string values)

    @property
    def default_scheduler(self) -> str:
        return self.options.get("scheduler", "uniform")


def _sampler(label: str, ours: str, aliases: tuple[str, ...], **options: str) -> A1111Sampler:
    return A1111Sampler(label, ours, aliases + (ours,), options)


SAMPLERS = [
    _sampler("DPM++ 2M", "dpmpp_2m", ("k_dpmpp_2m",), scheduler="karras"),
    _sampler("DPM++ SDE", "dpmpp_sde", ("k_dpmpp_sde",), scheduler="karras", second_order="True",
             brownian_noise="True"),
    _sampler("DPM++ 2M SDE", "dpmpp_2m_sde", ("k_dpmpp_2m_sde",), scheduler="exponential", brownian_noise="True"),
    _sampler("DPM++ 2S a", "dpmpp_2s_a", ("k_dpmpp_2s_a",), scheduler="karras", uses_ensd="True",
             second_order="True"),
    _sampler("Euler a", "euler_a", ("k_euler_a", "k_euler_ancestral"), uses_ensd="True"),
    _sampler("Euler", "euler", ("k_euler",)),
    _sampler("LMS", "lms", ("k_lms",)),
    _sampler("Heun", "heun", ("k_heun",), second_order="True"),
    _sampler("DPM2", "dpm2", ("k_dpm_2",), scheduler="karras", discard_next_to_last_sigma="True",
             second_order="True"),
    _sampler("DPM2 a", "dpm2_a", ("k_dpm_2_a",), scheduler="karras", discard_next_to_last_sigma="True",
             uses_ensd="True", second_order="True"),
    _sampler("DDIM", "ddim", ()),
    _sampler("PLMS", "plms", ()),
    # The v2 repository's DPM-Solver++(2M) in continuous time: not A1111's "DPM++ 2M" (ldm/outputs.py).
    _sampler("DPM-Solver++ 2M (v2)", "dpm_solver", ()),
]
# A1111's samplers that this project does not have: asked for, they are refused by name.
NOT_HERE = ("DPM++ 2M SDE Heun", "DPM++ 3M SDE", "DPM fast", "DPM adaptive", "Restart", "DDIM CFG++", "UniPC", "LCM")
DEFAULT = "DPM++ 2M"  # A1111's samplers[0], used when a request names none

# (name, label, default_rho, need_inner_model) of A1111's sd_schedulers, for the ones we have.
SCHEDULERS = [("automatic", "Automatic", -1, False), ("uniform", "Uniform", -1, True), ("karras", "Karras", 7.0, False)]
SCHEDULERS_NOT_HERE = ("Exponential", "Polyexponential", "SGM Uniform", "KL Optimal", "Align Your Steps", "Simple",
                       "Normal", "DDIM", "Beta")


def find_sampler(name: str) -> A1111Sampler:
    """A1111's label (exact), else an alias or label in any case ("k_euler_a", "euler a")."""
    for sampler in SAMPLERS:
        if name == sampler.label:
            return sampler
    for sampler in SAMPLERS:
        if name.lower() in (sampler.label.lower(), *sampler.aliases):
            return sampler
    if name in NOT_HERE:
        raise Refused("sampler_name", f"{name!r} is an AUTOMATIC1111 sampler this project does not have; "
                                         f"samplers here: {', '.join(s.label for s in SAMPLERS)}")
    raise Refused("sampler_name", f"no sampler {name!r}; samplers here: {', '.join(s.label for s in SAMPLERS)}")


def scheduler_name(name: str, field_name: str = "scheduler") -> str:
    """'automatic' | 'uniform' | 'karras' from A1111's name or label, any case."""
    for scheduler, label, *_ in SCHEDULERS:
        if name.lower() in (scheduler, label.lower()):
            return scheduler
    known = ", ".join(label for _, label, *_ in SCHEDULERS)
    if any(name.lower() == other.lower() for other in SCHEDULERS_NOT_HERE):
        raise Refused(field_name, f"{name!r} is an AUTOMATIC1111 scheduler this project does not have; "
                                     f"schedulers here: {known}")
    raise Refused(field_name, f"no scheduler {name!r}; schedulers here: {known}")


def resolve(sampler_name: str | None, scheduler: str | None) -> tuple[A1111Sampler, bool]:
    """(the sampler, karras) for a request's sampler_name (or sampler_index) and scheduler, as
    A1111's get_sampler_and_scheduler reads them: a name may end with a scheduler (" Karras", the
    pre-1.9 names such as "DPM++ 2M Karras"); "Automatic" is the sampler's own default spacing.
    A suffix and a scheduler field that disagree are refused rather than one of them ignored."""
    name = sampler_name or DEFAULT
    suffix = None
    for scheduler_key, label, *_ in SCHEDULERS[1:]:
        if name.endswith(" " + label) and name != label:
            suffix, name = scheduler_key, name[: -len(label) - 1]
            break
    sampler = find_sampler(name)
    asked = scheduler_name(scheduler) if scheduler else "automatic"
    if suffix is not None and asked not in ("automatic", suffix):
        raise Refused("scheduler", f"{scheduler!r} disagrees with the sampler name {sampler_name!r}; give one")
    chosen = suffix or asked
    if chosen == "automatic":
        chosen = sampler.default_scheduler
        if chosen == "exponential":
            raise Refused("scheduler", f"'Automatic' is the Exponential spacing for {sampler.label} in "
                                          "AUTOMATIC1111, which this project does not have; send scheduler 'Karras' "
                                          "or 'Uniform'")
    if chosen == "karras" and sampler.ours in ("ddim", "plms", "dpm_solver"):
        raise Refused("scheduler", f"{sampler.label} walks timesteps, not noise levels: Karras's spacing does "
                                      "not apply; send 'Automatic' or 'Uniform'")
    return sampler, chosen == "karras"


def samplers_json() -> list[dict]:
    """GET /sdapi/v1/samplers."""
    return [{"name": s.label, "aliases": list(s.aliases), "options": dict(s.options)} for s in SAMPLERS]


def schedulers_json() -> list[dict]:
    """GET /sdapi/v1/schedulers."""
    return [{"name": name, "label": label, "aliases": None, "default_rho": rho, "need_inner_model": inner}
            for name, label, rho, inner in SCHEDULERS]
