//! Launch planning: how a (T, F) problem maps onto tiles, blocks and workspace bytes.
//!
//! Everything here is plain arithmetic, shared by the GPU code and tested on the CPU. The
//! constants mirror `kernels/linrec.cu` (`LINREC_BLOCK`, `StepsPerThread`); a test reads the
//! kernel source to keep them in step.

use scan_core::ScanShape;

use crate::CudaScanError;

/// Threads per block of every kernel (`LINREC_BLOCK` in the kernel source).
pub const BLOCK_THREADS: u32 = 256;

/// The most blocks one launch may have (the grid's x dimension).
pub const MAX_BLOCKS: u64 = (1 << 31) - 1;

/// The largest look-back window, in time tiles.
pub const MAX_TILES_PER_WINDOW: u64 = 64;

/// How a contiguous (T, F) array is stored on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceLayout {
    /// Row-major (T, F): the features of one step are contiguous.
    TimeMajor,
    /// Row-major (F, T): the steps of one feature are contiguous.
    TimeContiguous,
}

impl DeviceLayout {
    /// Element strides `(stride_t, stride_f)` of a contiguous array of this layout.
    pub fn strides(self, shape: ScanShape) -> (i64, i64) {
        match self {
            Self::TimeMajor => (shape.n_features as i64, 1),
            Self::TimeContiguous => (1, shape.n_steps as i64),
        }
    }
}

/// Which kernel runs a scan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The single-pass parallel scan over tiles (the default).
    #[default]
    Parallel,
    /// One thread per feature walking all steps: the paper's serial baseline.
    Serial,
}

/// The element types the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElementKind {
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl ElementKind {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    /// Steps each thread of the parallel kernel keeps in registers (`StepsPerThread`).
    pub fn steps_per_thread(self) -> u32 {
        match self {
            Self::F32 => 8,
            Self::F64 => 4,
        }
    }
}

/// The grid of the serial kernel: one thread per feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialPlan {
    /// Blocks of [`BLOCK_THREADS`] threads.
    pub blocks: u32,
}

/// Plans the serial kernel.
pub fn plan_serial(shape: ScanShape) -> Result<SerialPlan, CudaScanError> {
    let blocks = (shape.n_features as u64).div_ceil(u64::from(BLOCK_THREADS));
    check_blocks(shape, blocks)?;
    Ok(SerialPlan {
        blocks: blocks as u32,
    })
}

fn check_blocks(shape: ScanShape, blocks: u64) -> Result<(), CudaScanError> {
    if blocks > MAX_BLOCKS {
        return Err(CudaScanError::TooLarge {
            n_steps: shape.n_steps,
            n_features: shape.n_features,
            blocks,
            max_blocks: MAX_BLOCKS,
        });
    }
    Ok(())
}

/// The tiling of the parallel kernel.
///
/// A tile is `feature_lanes` features × `time_groups · steps_per_thread` steps, one block
/// of `feature_lanes · time_groups = 256` threads. Tiles are numbered feature tile fastest:
/// `tile = time_tile · n_feature_tiles + feature_tile`, which is also the order of the
/// tickets, so every tile waits only on tiles with smaller tickets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParallelPlan {
    /// Features per tile (a power of two, at most F rounded up to one).
    pub feature_lanes: u32,
    /// Threads per feature in a tile (`256 / feature_lanes`).
    pub time_groups: u32,
    /// Whether consecutive threads walk time (time-contiguous data) or features.
    pub lanes_on_time: bool,
    /// Steps each thread keeps in registers.
    pub steps_per_thread: u32,
    /// Steps per tile: `time_groups · steps_per_thread`.
    pub tile_steps: u64,
    /// `ceil(F / feature_lanes)`.
    pub n_feature_tiles: u64,
    /// `ceil(T / tile_steps)`.
    pub n_time_tiles: u64,
    /// Time tiles per look-back window: about `sqrt(n_time_tiles)`, which balances the
    /// serial chain across windows (`n_time_tiles / window` links) against the aggregates a
    /// tile folds (up to `window − 1`).
    pub tiles_per_window: u32,
}

impl ParallelPlan {
    /// Blocks to launch: one per tile.
    pub fn blocks(&self) -> u64 {
        self.n_feature_tiles * self.n_time_tiles
    }
}

/// Plans the parallel kernel for a non-empty problem.
pub fn plan_parallel(
    shape: ScanShape,
    layout: DeviceLayout,
    element: ElementKind,
) -> Result<ParallelPlan, CudaScanError> {
    let n_steps = shape.n_steps.max(1) as u64;
    let n_features = shape.n_features.max(1) as u64;
    let steps_per_thread = element.steps_per_thread();
    let block = u64::from(BLOCK_THREADS);
    // Threads per feature that T needs; short sequences leave room for more features.
    let groups_needed = n_steps
        .div_ceil(u64::from(steps_per_thread))
        .next_power_of_two()
        .min(block);
    let features_pow2 = n_features.next_power_of_two();
    let (feature_lanes, lanes_on_time) = match layout {
        // Up to a warp of lanes on features keeps loads of one step coalesced; more when T
        // is too short to fill the block along time.
        DeviceLayout::TimeMajor => (features_pow2.min((block / groups_needed).max(32)), false),
        // Lanes along time read contiguous memory; features only fill what T leaves.
        DeviceLayout::TimeContiguous => (features_pow2.min(block / groups_needed), true),
    };
    let feature_lanes = feature_lanes.clamp(1, block);
    let time_groups = block / feature_lanes;
    let tile_steps = time_groups * u64::from(steps_per_thread);
    let n_feature_tiles = n_features.div_ceil(feature_lanes);
    let n_time_tiles = n_steps.div_ceil(tile_steps);
    let tiles_per_window =
        ((n_time_tiles as f64).sqrt().ceil() as u64).clamp(1, MAX_TILES_PER_WINDOW);
    let plan = ParallelPlan {
        feature_lanes: feature_lanes as u32,
        time_groups: time_groups as u32,
        lanes_on_time,
        steps_per_thread,
        tile_steps,
        n_feature_tiles,
        n_time_tiles,
        tiles_per_window: tiles_per_window as u32,
    };
    check_blocks(shape, plan.blocks())?;
    Ok(plan)
}

/// Byte offsets of the parallel kernel's workspace parts; every part is 256-byte aligned.
///
/// The workspace holds the ticket counter (u64), one u32 flag per tile, and three arrays of
/// `n_time_tiles · F` elements (aggregate decays, aggregate impulses, window states). It is
/// allocated once per device, grown when a larger problem comes, cleared only when created
/// and when the epoch counter wraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceLayout {
    /// Offset of the ticket counter (always 0).
    pub counter: usize,
    /// Offset of the tile flags.
    pub flags: usize,
    /// Offset of the aggregate decays.
    pub carry_decay: usize,
    /// Offset of the aggregate impulses.
    pub carry_impulse: usize,
    /// Offset of the window states.
    pub carry_state: usize,
    /// Total bytes.
    pub total_bytes: usize,
}

const WORKSPACE_ALIGN: usize = 256;

fn align_up(bytes: usize) -> usize {
    bytes.div_ceil(WORKSPACE_ALIGN) * WORKSPACE_ALIGN
}

impl WorkspaceLayout {
    /// The workspace of a parallel launch of `plan` on `n_features` features.
    pub fn new(plan: &ParallelPlan, n_features: usize, element: ElementKind) -> Self {
        let counter = 0;
        let flags = align_up(counter + 8);
        let flag_bytes = plan.blocks() as usize * 4;
        let carry_bytes = plan.n_time_tiles as usize * n_features * element.size();
        let carry_decay = align_up(flags + flag_bytes);
        let carry_impulse = align_up(carry_decay + carry_bytes);
        let carry_state = align_up(carry_impulse + carry_bytes);
        let total_bytes = align_up(carry_state + carry_bytes);
        Self {
            counter,
            flags,
            carry_decay,
            carry_impulse,
            carry_state,
            total_bytes,
        }
    }
}

/// The epoch and ticket bookkeeping of one workspace, advanced once per parallel launch.
///
/// A flag is "published in this launch" when it equals the launch's epoch; epochs only grow,
/// so flags of earlier launches never look ready. The ticket counter on the device is never
/// reset either: each launch starts at `ticket_base` and takes exactly one ticket per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochState {
    /// The epoch of the last launch (0: none since the workspace was cleared).
    pub epoch: u32,
    /// The device counter's value after the last launch.
    pub ticket_base: u64,
}

/// The largest epoch before the workspace is cleared and epochs start again at 1.
pub const MAX_EPOCH: u32 = 1 << 30;

impl EpochState {
    /// The state of a freshly cleared workspace.
    pub fn cleared() -> Self {
        Self {
            epoch: 0,
            ticket_base: 0,
        }
    }

    /// Whether the workspace must be cleared before the next launch.
    pub fn needs_clear(&self) -> bool {
        self.epoch >= MAX_EPOCH
    }

    /// The (epoch, ticket base) of the next launch, given that the workspace is not due for
    /// clearing.
    pub fn next_launch(&self) -> (u32, u64) {
        (self.epoch + 1, self.ticket_base)
    }

    /// Records a launch of `blocks` blocks with epoch `epoch`.
    pub fn launched(&mut self, epoch: u32, blocks: u64) {
        self.epoch = epoch;
        self.ticket_base += blocks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n_steps: usize, n_features: usize) -> ScanShape {
        ScanShape {
            n_steps,
            n_features,
        }
    }

    #[test]
    fn constants_match_the_kernel_source() {
        let source = include_str!("../kernels/linrec.cu");
        assert!(source.contains(&format!("#define LINREC_BLOCK {BLOCK_THREADS}")));
        for (ty, kind) in [("float", ElementKind::F32), ("double", ElementKind::F64)] {
            let pattern = format!(
                "struct StepsPerThread<{ty}> {{\n    static constexpr int value = {};",
                kind.steps_per_thread()
            );
            assert!(source.contains(&pattern), "missing `{pattern}`");
        }
    }

    #[test]
    fn every_plan_covers_the_problem_with_full_blocks() {
        for layout in [DeviceLayout::TimeMajor, DeviceLayout::TimeContiguous] {
            for element in [ElementKind::F32, ElementKind::F64] {
                for n_steps in [1, 2, 7, 16, 255, 256, 4096, 65_537, 1 << 20] {
                    for n_features in [1, 3, 4, 32, 33, 128, 1000, 12_288] {
                        let s = shape(n_steps, n_features);
                        let plan = plan_parallel(s, layout, element).unwrap();
                        assert_eq!(plan.feature_lanes * plan.time_groups, BLOCK_THREADS);
                        assert!(plan.feature_lanes.is_power_of_two());
                        assert!(
                            plan.n_feature_tiles * u64::from(plan.feature_lanes)
                                >= n_features as u64
                        );
                        assert!(plan.n_time_tiles * plan.tile_steps >= n_steps as u64);
                        // No tile is entirely padding.
                        assert!((plan.n_time_tiles - 1) * plan.tile_steps < n_steps as u64);
                        assert!(
                            (plan.n_feature_tiles - 1) * u64::from(plan.feature_lanes)
                                < n_features as u64
                        );
                        assert!(plan.tiles_per_window >= 1);
                        assert!(u64::from(plan.tiles_per_window) <= MAX_TILES_PER_WINDOW);
                        assert_eq!(plan.lanes_on_time, layout == DeviceLayout::TimeContiguous);
                    }
                }
            }
        }
    }

    #[test]
    fn tiles_follow_the_shape() {
        // Long time-major sequences with few features: lanes on features only, time long.
        let p = plan_parallel(shape(65_536, 4), DeviceLayout::TimeMajor, ElementKind::F32).unwrap();
        assert_eq!((p.feature_lanes, p.time_groups, p.tile_steps), (4, 64, 512));
        assert_eq!(
            (p.n_feature_tiles, p.n_time_tiles, p.tiles_per_window),
            (1, 128, 12)
        );
        // Many features: a warp of lanes on features.
        let p = plan_parallel(
            shape(65_536, 12_288),
            DeviceLayout::TimeMajor,
            ElementKind::F32,
        )
        .unwrap();
        assert_eq!((p.feature_lanes, p.time_groups, p.tile_steps), (32, 8, 64));
        assert_eq!((p.n_feature_tiles, p.n_time_tiles), (384, 1024));
        // Short sequences: more feature lanes instead of idle time groups.
        let p = plan_parallel(shape(16, 128), DeviceLayout::TimeMajor, ElementKind::F32).unwrap();
        assert_eq!(
            (p.feature_lanes, p.time_groups, p.n_time_tiles),
            (128, 2, 1)
        );
        // Time-contiguous: one feature per tile when T fills the block.
        let p = plan_parallel(
            shape(1 << 20, 4),
            DeviceLayout::TimeContiguous,
            ElementKind::F64,
        )
        .unwrap();
        assert_eq!(
            (p.feature_lanes, p.time_groups, p.tile_steps),
            (1, 256, 1024)
        );
        assert_eq!(
            (p.n_feature_tiles, p.n_time_tiles, p.tiles_per_window),
            (4, 1024, 32)
        );
    }

    #[test]
    fn serial_plan_has_one_thread_per_feature() {
        assert_eq!(plan_serial(shape(10, 1)).unwrap().blocks, 1);
        assert_eq!(plan_serial(shape(10, 256)).unwrap().blocks, 1);
        assert_eq!(plan_serial(shape(10, 257)).unwrap().blocks, 2);
    }

    #[test]
    fn oversized_problems_are_errors_not_panics() {
        let huge = shape(1 << 40, 1 << 20);
        let error = plan_parallel(huge, DeviceLayout::TimeMajor, ElementKind::F32).unwrap_err();
        assert!(matches!(error, CudaScanError::TooLarge { .. }), "{error}");
    }

    #[test]
    fn workspace_parts_are_aligned_and_disjoint() {
        let s = shape(1 << 20, 3);
        let plan = plan_parallel(s, DeviceLayout::TimeMajor, ElementKind::F64).unwrap();
        let w = WorkspaceLayout::new(&plan, 3, ElementKind::F64);
        let carry = plan.n_time_tiles as usize * 3 * 8;
        assert_eq!(w.counter, 0);
        assert!(w.flags >= 8);
        assert!(w.carry_decay >= w.flags + plan.blocks() as usize * 4);
        assert!(w.carry_impulse >= w.carry_decay + carry);
        assert!(w.carry_state >= w.carry_impulse + carry);
        assert!(w.total_bytes >= w.carry_state + carry);
        for offset in [
            w.flags,
            w.carry_decay,
            w.carry_impulse,
            w.carry_state,
            w.total_bytes,
        ] {
            assert_eq!(offset % WORKSPACE_ALIGN, 0);
        }
    }

    #[test]
    fn epochs_grow_and_tickets_accumulate() {
        let mut state = EpochState::cleared();
        let (epoch, base) = state.next_launch();
        assert_eq!((epoch, base), (1, 0));
        state.launched(epoch, 10);
        assert_eq!(state.next_launch(), (2, 10));
        state.launched(2, 5);
        assert_eq!(state.ticket_base, 15);
        state.epoch = MAX_EPOCH;
        assert!(state.needs_clear());
    }
}
