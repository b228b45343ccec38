//! Which vector instruction set the CPU backend's own kernels run with, detected once.

/// The instruction sets the hand-written product kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512F with FMA (x86-64).
    Avx512,
    /// AVX2 with FMA (x86-64).
    Avx2,
    /// Neither: the products go through the `gemm` crate.
    None,
}

impl Isa {
    /// Every instruction set this CPU runs, widest first (always ending with `None`).
    pub(crate) fn supported() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .filter(|&isa| isa.runs_here())
            .chain([Isa::None])
            .collect()
    }

    /// Whether this CPU has the instructions.
    pub(crate) fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let fma = is_x86_feature_detected!("fma");
            match self {
                // The AVX-512 code is compiled with `avx512f`, which implies AVX2 and F16C
                // to the compiler; a hypervisor may report AVX-512F without them.
                Isa::Avx512 => {
                    fma && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx2")
                        && is_x86_feature_detected!("f16c")
                }
                Isa::Avx2 => fma && is_x86_feature_detected!("avx2"),
                Isa::None => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::None
        }
    }
}

/// The widest instruction set of this CPU (detected on first use).
pub(crate) fn widest() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| Isa::supported()[0])
}

/// A kernel `fn name(isa, args…)` whose body is compiled three times (AVX-512, AVX2,
/// baseline) and run in the variant `isa` names if this CPU has it, else the baseline.
macro_rules! vectorized {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments, unsafe_code)]
        pub(super) fn $name<E: $crate::Real>(isa: $crate::backend::isa::Isa, $($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn portable<E: $crate::Real>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx512<E: $crate::Real>($($arg: $ty),*) {
                portable($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2<E: $crate::Real>($($arg: $ty),*) {
                portable($($arg),*)
            }

            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `runs_here` checked that this CPU has AVX-512F, AVX2, F16C and FMA.
                $crate::backend::isa::Isa::Avx512 if isa.runs_here() => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `runs_here` checked that this CPU has AVX2 and FMA.
                $crate::backend::isa::Isa::Avx2 if isa.runs_here() => unsafe { avx2($($arg),*) },
                _ => portable($($arg),*),
            }
        }
    };
}

pub(crate) use vectorized;
