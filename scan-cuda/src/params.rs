//! The argument block every kernel takes, mirrored from `LinrecParams` in `kernels/linrec.cu`.

/// The kernels' only argument, passed by value. Pointers are raw device addresses
/// (`CUdeviceptr`); 0 is the null pointer, meaning "zeros" for optional inputs and "not
/// wanted" for optional outputs. The field order, types and total size (184 bytes) must match
/// the C struct; the static_assert there and `params_layout_matches_the_kernel` here pin both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinrecParams {
    /// a, (T, F).
    pub decay: u64,
    /// Forward: x; backward: ∂L/∂h, (T, F).
    pub impulse: u64,
    /// Backward: the forward states h, (T, F).
    pub state: u64,
    /// Forward: h0; backward: grad_last; (F) or 0.
    pub carry_in: u64,
    /// Backward: h0, (F) or 0.
    pub initial_state: u64,
    /// Forward: h; backward: ∂L/∂x, (T, F).
    pub out: u64,
    /// Backward: ∂L/∂a, (T, F).
    pub out_grad_decay: u64,
    /// Backward: ∂L/∂h0, (F) or 0.
    pub out_grad_initial: u64,
    /// T ≥ 1.
    pub n_steps: i64,
    /// F ≥ 1.
    pub n_features: i64,
    /// Element stride between consecutive time indices.
    pub stride_t: i64,
    /// Element stride between consecutive features.
    pub stride_f: i64,
    /// Parallel kernel: feature tiles.
    pub n_feature_tiles: i64,
    /// Parallel kernel: time tiles.
    pub n_time_tiles: i64,
    /// Parallel kernel: the ticket counter (u64).
    pub tile_counter: u64,
    /// Parallel kernel: one u32 flag per tile.
    pub tile_flags: u64,
    /// Parallel kernel: aggregate decays, (time tiles, F).
    pub carry_decay: u64,
    /// Parallel kernel: aggregate impulses, (time tiles, F).
    pub carry_impulse: u64,
    /// Parallel kernel: states after each window's last tile, (time tiles, F).
    pub carry_state: u64,
    /// The ticket counter's value when the launch starts.
    pub ticket_base: u64,
    /// 1 when scan step j touches time index T-1-j.
    pub reverse: i32,
    /// 1 when consecutive threads walk time rather than features.
    pub lanes_on_time: i32,
    /// Features per tile.
    pub feature_lanes: i32,
    /// Threads per feature in a tile.
    pub time_groups: i32,
    /// Time tiles per look-back window.
    pub tiles_per_window: i32,
    /// The flag value that means "published in this launch".
    pub epoch: u32,
}

#[cfg(feature = "cuda")]
// SAFETY: LinrecParams is #[repr(C)], Copy, made of integers only (device addresses are plain
// u64), so a bitwise copy to the device is a valid value of the kernels' C struct, whose
// layout the static_assert in linrec.cu and the test below keep identical.
unsafe impl cust::memory::DeviceCopy for LinrecParams {}

#[cfg(test)]
mod tests {
    use super::LinrecParams;
    use std::mem::{offset_of, size_of};

    #[test]
    fn params_layout_matches_the_kernel() {
        assert_eq!(size_of::<LinrecParams>(), 184);
        assert_eq!(offset_of!(LinrecParams, n_steps), 64);
        assert_eq!(offset_of!(LinrecParams, tile_counter), 112);
        assert_eq!(offset_of!(LinrecParams, ticket_base), 152);
        assert_eq!(offset_of!(LinrecParams, reverse), 160);
        assert_eq!(offset_of!(LinrecParams, epoch), 180);
        let source = include_str!("../kernels/linrec.cu");
        assert!(source.contains("sizeof(LinrecParams<float>) == 184"));
        assert!(source.contains("sizeof(LinrecParams<double>) == 184"));
    }
}
