//! The GPU side (feature `cuda`): device runtimes, launches, host staging and the
//! device-buffer API.

use std::sync::{Arc, Mutex, MutexGuard};

use cust::context::{Context, CurrentContext};
use cust::device::{Device, DeviceAttribute};
use cust::function::Function;
use cust::launch;
use cust::memory::bytemuck::Zeroable;
use cust::memory::{CopyDestination, DeviceBuffer, DeviceCopy, DeviceSlice};
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};
use cust::CudaFlags;
use scan_core::{copy_or_zero, BackwardProblem, Direction, Element, ForwardProblem, ScanShape};

use crate::error::element_count;
use crate::params::LinrecParams;
use crate::plan::{plan_parallel, plan_serial, EpochState, WorkspaceLayout};
use crate::staging::{choose_layout, stage, unstage};
use crate::{Cuda, CudaScanError, DeviceLayout, ElementKind, Kernel, BLOCK_THREADS, KERNEL_PTX};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// An element type the kernels are compiled for: `f32` or `f64`.
pub trait DeviceElement: Element + DeviceCopy + Zeroable + sealed::Sealed {
    /// Which kernels to launch.
    const KIND: ElementKind;
}

impl DeviceElement for f32 {
    const KIND: ElementKind = ElementKind::F32;
}

impl DeviceElement for f64 {
    const KIND: ElementKind = ElementKind::F64;
}

/// The kernels in the order of [`kernel_index`].
const KERNEL_NAMES: [&str; 8] = [
    "linrec_forward_f32",
    "linrec_forward_f64",
    "linrec_backward_f32",
    "linrec_backward_f64",
    "linrec_serial_forward_f32",
    "linrec_serial_forward_f64",
    "linrec_serial_backward_f32",
    "linrec_serial_backward_f64",
];

fn kernel_index(kernel: Kernel, backward: bool, element: ElementKind) -> usize {
    let serial = usize::from(kernel == Kernel::Serial);
    let f64 = usize::from(element == ElementKind::F64);
    4 * serial + 2 * usize::from(backward) + f64
}

/// What one device needs, created once per process and device.
struct Runtime {
    device: u32,
    /// The device's primary context; made current on the calling thread before every call.
    context: Context,
    /// The kernels of the module, looked up once.
    functions: Vec<Function<'static>>,
    /// Launches and the workspace are serialised per device.
    launcher: Mutex<Launcher>,
}

/// The stream and the reusable workspace of the parallel kernel.
struct Launcher {
    stream: Stream,
    workspace: Option<DeviceBuffer<u32>>,
    epochs: EpochState,
    /// Set when a launch may have left the ticket counter or flags inconsistent (an error
    /// between launch and completion): the workspace is cleared before the next launch.
    dirty: bool,
}

static RUNTIMES: Mutex<Vec<Arc<Runtime>>> = Mutex::new(Vec::new());

fn runtime(device: u32) -> Result<Arc<Runtime>, CudaScanError> {
    let mut runtimes = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(runtime) = runtimes.iter().find(|r| r.device == device) {
        CurrentContext::set_current(&runtime.context)?;
        return Ok(Arc::clone(runtime));
    }
    cust::init(CudaFlags::empty())?;
    // Context::new retains the primary context and makes it current on this thread.
    let context = Context::new(Device::get_device(device)?)?;
    // The module lives as long as the process (runtimes are never dropped), so it is leaked
    // to let the cached functions borrow it for 'static.
    let module: &'static Module = Box::leak(Box::new(Module::from_ptx(KERNEL_PTX, &[])?));
    let functions = KERNEL_NAMES
        .iter()
        .map(|name| module.get_function(name))
        .collect::<Result<Vec<_>, _>>()?;
    let stream = Stream::new(StreamFlags::DEFAULT, None)?;
    let runtime = Arc::new(Runtime {
        device,
        context,
        functions,
        launcher: Mutex::new(Launcher {
            stream,
            workspace: None,
            epochs: EpochState::cleared(),
            dirty: false,
        }),
    });
    runtimes.push(Arc::clone(&runtime));
    Ok(runtime)
}

impl Runtime {
    fn lock(&self) -> MutexGuard<'_, Launcher> {
        self.launcher.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The number of streaming multiprocessors of a device (queried at run time; reported by the
/// benchmark, and the basis for occupancy reasoning).
pub fn multiprocessor_count(device: u32) -> Result<u32, CudaScanError> {
    runtime(device)?;
    let count = Device::get_device(device)?.get_attribute(DeviceAttribute::MultiprocessorCount)?;
    Ok(count.max(0) as u32)
}

/// A forward scan on device buffers (the zero-copy API).
///
/// Every (T, F) buffer is contiguous in `layout` and holds T·F elements; `initial` holds F
/// (lengths are checked). The buffers must belong to the device's primary context (for
/// example allocated after [`Cuda::activate`], or with `cust::quick_init`): that is the
/// `# Safety` contract of [`Cuda::forward_device`], which the types cannot check.
#[derive(Debug)]
pub struct DeviceForward<'a, E: DeviceCopy> {
    /// The problem's size.
    pub shape: ScanShape,
    /// How every (T, F) buffer is stored.
    pub layout: DeviceLayout,
    /// The processing order.
    pub direction: Direction,
    /// a, (T, F).
    pub decay: &'a DeviceSlice<E>,
    /// x, (T, F).
    pub impulse: &'a DeviceSlice<E>,
    /// h0, (F); `None` means zeros.
    pub initial: Option<&'a DeviceSlice<E>>,
    /// Where h is written, (T, F).
    pub state: &'a mut DeviceSlice<E>,
}

/// A backward scan on device buffers; see [`DeviceForward`] for the conventions.
#[derive(Debug)]
pub struct DeviceBackward<'a, E: DeviceCopy> {
    /// The problem's size.
    pub shape: ScanShape,
    /// How every (T, F) buffer is stored.
    pub layout: DeviceLayout,
    /// The processing order of the forward pass.
    pub direction: Direction,
    /// a, (T, F).
    pub decay: &'a DeviceSlice<E>,
    /// The forward states h, (T, F).
    pub state: &'a DeviceSlice<E>,
    /// h0 of the forward pass, (F); `None` means zeros.
    pub initial: Option<&'a DeviceSlice<E>>,
    /// ∂L/∂h, (T, F).
    pub grad_state: &'a DeviceSlice<E>,
    /// Extra gradient on the last processed state, (F); `None` means zeros.
    pub grad_last: Option<&'a DeviceSlice<E>>,
    /// Where ∂L/∂a is written, (T, F).
    pub grad_decay: &'a mut DeviceSlice<E>,
    /// Where ∂L/∂x is written, (T, F).
    pub grad_impulse: &'a mut DeviceSlice<E>,
    /// Where ∂L/∂h0 is written, (F); `None` if not needed.
    pub grad_initial: Option<&'a mut DeviceSlice<E>>,
}

fn check_len<E: DeviceCopy>(
    operation: &'static str,
    argument: &'static str,
    slice: &DeviceSlice<E>,
    expected: usize,
) -> Result<(), CudaScanError> {
    if slice.len() == expected {
        Ok(())
    } else {
        Err(CudaScanError::BufferLength {
            operation,
            argument,
            expected,
            actual: slice.len(),
        })
    }
}

fn address<E: DeviceCopy>(slice: &DeviceSlice<E>) -> u64 {
    slice.as_device_ptr().as_raw()
}

fn optional_address<E: DeviceCopy>(slice: Option<&DeviceSlice<E>>) -> u64 {
    slice.map_or(0, address)
}

impl Cuda {
    /// Creates the device's context and module if needed and makes the context current on
    /// this thread, so that `cust` allocations for the device-buffer API land in it.
    pub fn activate(&self) -> Result<(), CudaScanError> {
        runtime(self.device).map(drop)
    }

    /// The number of streaming multiprocessors of this backend's device.
    pub fn multiprocessor_count(&self) -> Result<u32, CudaScanError> {
        multiprocessor_count(self.device)
    }

    /// Runs the forward recurrence on device buffers and waits for it to finish.
    ///
    /// Buffer lengths are checked against the shape (an error, never a launch, when they
    /// differ or when T·F overflows).
    ///
    /// # Safety
    ///
    /// Every buffer in `args` must be a device allocation of the primary context of this
    /// backend's device ([`Cuda::device`]) — allocated while that context was current, e.g.
    /// after [`Cuda::activate`] on the allocating thread — and stay allocated for the
    /// call. The kernel dereferences the buffers' raw device addresses in that context; a
    /// buffer of another context or device is not checked and would be accessed out of
    /// bounds.
    pub unsafe fn forward_device<E: DeviceElement>(
        &self,
        args: DeviceForward<'_, E>,
    ) -> Result<(), CudaScanError> {
        const OP: &str = "forward_device";
        let shape = args.shape;
        let len = element_count(OP, shape)?;
        check_len(OP, "decay", args.decay, len)?;
        check_len(OP, "impulse", args.impulse, len)?;
        check_len(OP, "state", args.state, len)?;
        if let Some(initial) = args.initial {
            check_len(OP, "initial", initial, shape.n_features)?;
        }
        if shape.is_empty() {
            return Ok(());
        }
        let params = LinrecParams {
            decay: address(args.decay),
            impulse: address(args.impulse),
            carry_in: optional_address(args.initial),
            out: address(args.state),
            reverse: i32::from(args.direction == Direction::Reverse),
            ..LinrecParams::default()
        };
        // SAFETY: the caller guarantees primary-context buffers (this function's contract);
        // their lengths were checked above.
        unsafe { self.launch::<E>(false, shape, args.layout, params) }
    }

    /// Runs the backward pass on device buffers and waits for it to finish.
    ///
    /// Buffer lengths are checked as in [`Cuda::forward_device`].
    ///
    /// # Safety
    ///
    /// As for [`Cuda::forward_device`]: every buffer in `args` belongs to the primary
    /// context of this backend's device and stays allocated for the call.
    pub unsafe fn backward_device<E: DeviceElement>(
        &self,
        args: DeviceBackward<'_, E>,
    ) -> Result<(), CudaScanError> {
        const OP: &str = "backward_device";
        let shape = args.shape;
        let len = element_count(OP, shape)?;
        for (argument, slice) in [
            ("decay", args.decay),
            ("state", args.state),
            ("grad_state", args.grad_state),
            ("grad_decay", &*args.grad_decay),
            ("grad_impulse", &*args.grad_impulse),
        ] {
            check_len(OP, argument, slice, len)?;
        }
        for (argument, slice) in [
            ("initial", args.initial),
            ("grad_last", args.grad_last),
            ("grad_initial", args.grad_initial.as_deref()),
        ] {
            if let Some(slice) = slice {
                check_len(OP, argument, slice, shape.n_features)?;
            }
        }
        if shape.n_features == 0 {
            return Ok(());
        }
        if shape.n_steps == 0 {
            // With no steps the initial state is the last state: ∂L/∂h0 = grad_last.
            let runtime = runtime(self.device)?;
            let _launcher = runtime.lock();
            if let Some(grad_initial) = args.grad_initial {
                match args.grad_last {
                    Some(grad_last) => grad_initial.copy_from(grad_last)?,
                    None => grad_initial.copy_from(&vec![E::zero(); shape.n_features])?,
                }
            }
            return Ok(());
        }
        let params = LinrecParams {
            decay: address(args.decay),
            impulse: address(args.grad_state),
            state: address(args.state),
            carry_in: optional_address(args.grad_last),
            initial_state: optional_address(args.initial),
            out: address(args.grad_impulse),
            out_grad_decay: address(args.grad_decay),
            out_grad_initial: optional_address(args.grad_initial.as_deref()),
            // The backward scan runs against the forward processing order.
            reverse: i32::from(args.direction == Direction::Forward),
            ..LinrecParams::default()
        };
        // SAFETY: the caller guarantees primary-context buffers (this function's contract);
        // their lengths were checked above.
        unsafe { self.launch::<E>(true, shape, args.layout, params) }
    }

    /// Completes `params` with the shape, layout and plan, launches and synchronises.
    ///
    /// # Safety
    ///
    /// Every non-zero address in `params` is a live allocation of the primary context of
    /// `self.device` holding the elements `shape` implies (T·F for (T, F) arrays, F for
    /// vectors), and those allocations stay alive and unaliased by writers for the call.
    unsafe fn launch<E: DeviceElement>(
        &self,
        backward: bool,
        shape: ScanShape,
        layout: DeviceLayout,
        mut params: LinrecParams,
    ) -> Result<(), CudaScanError> {
        let runtime = runtime(self.device)?;
        let mut launcher = runtime.lock();
        let function = &runtime.functions[kernel_index(self.kernel, backward, E::KIND)];
        let (stride_t, stride_f) = layout.strides(shape);
        params.n_steps = shape.n_steps as i64;
        params.n_features = shape.n_features as i64;
        params.stride_t = stride_t;
        params.stride_f = stride_f;
        match self.kernel {
            Kernel::Serial => {
                let blocks = plan_serial(shape)?.blocks;
                let stream = &launcher.stream;
                // SAFETY: the kernel takes exactly one LinrecParams by value, whose layout
                // matches the C struct (params.rs). Every pointer in it is a live device
                // allocation of the primary context made current by `runtime` above, with
                // the length the shape implies (this function's `# Safety` contract, which
                // `forward_device`/`backward_device` pass on to their callers after
                // checking lengths), or 0 where the kernel treats null as absent; the kernel reads
                // and writes only (t, f) with t < T, f < F at t·stride_t + f·stride_f, which
                // is in bounds for contiguous buffers of T·F elements. The borrows of the
                // buffers outlive the synchronisation below, and the host reads nothing
                // before it.
                unsafe { launch!(function<<<blocks, BLOCK_THREADS, 0, stream>>>(params)) }?;
                stream.synchronize()?;
                Ok(())
            }
            Kernel::Parallel => {
                let plan = plan_parallel(shape, layout, E::KIND)?;
                let parts = WorkspaceLayout::new(&plan, shape.n_features, E::KIND);
                let launcher = &mut *launcher;
                let grow = launcher
                    .workspace
                    .as_ref()
                    .is_none_or(|w| w.len() * 4 < parts.total_bytes);
                if grow {
                    launcher.workspace = None;
                    launcher.workspace = Some(DeviceBuffer::zeroed(parts.total_bytes / 4)?);
                    launcher.epochs = EpochState::cleared();
                    launcher.dirty = false;
                }
                let workspace = launcher.workspace.as_mut().expect("allocated above");
                if launcher.dirty || launcher.epochs.needs_clear() {
                    workspace.set_zero()?;
                    launcher.epochs = EpochState::cleared();
                    launcher.dirty = false;
                }
                let base = address(workspace);
                let (epoch, ticket_base) = launcher.epochs.next_launch();
                params.n_feature_tiles = plan.n_feature_tiles as i64;
                params.n_time_tiles = plan.n_time_tiles as i64;
                params.tile_counter = base + parts.counter as u64;
                params.tile_flags = base + parts.flags as u64;
                params.carry_decay = base + parts.carry_decay as u64;
                params.carry_impulse = base + parts.carry_impulse as u64;
                params.carry_state = base + parts.carry_state as u64;
                params.ticket_base = ticket_base;
                params.epoch = epoch;
                params.lanes_on_time = i32::from(plan.lanes_on_time);
                params.feature_lanes = plan.feature_lanes as i32;
                params.time_groups = plan.time_groups as i32;
                params.tiles_per_window = plan.tiles_per_window as i32;
                let blocks = plan.blocks() as u32;
                // Until the launch is known to have completed, the counter may be ahead of
                // `ticket_base`: clear the workspace next time unless this one succeeds.
                launcher.dirty = true;
                let stream = &launcher.stream;
                // SAFETY: as for the serial kernel, plus the workspace: `parts` was computed
                // from this launch's plan and the buffer holds at least `parts.total_bytes`
                // bytes, so the counter, the `blocks` flags and the three carry arrays of
                // n_time_tiles·F elements the kernel touches are in bounds. The flags and
                // counter are consistent with (epoch, ticket_base): the workspace was either
                // just cleared (epoch 0, counter 0) or last used by a launch that completed
                // and was recorded in `epochs`. Launches are serialised by the launcher lock,
                // and one grid of `blocks` blocks takes exactly `blocks` tickets.
                unsafe { launch!(function<<<blocks, BLOCK_THREADS, 0, stream>>>(params)) }?;
                stream.synchronize()?;
                launcher.epochs.launched(epoch, plan.blocks());
                launcher.dirty = false;
                Ok(())
            }
        }
    }

    pub(crate) fn forward_host<E: DeviceElement>(
        &self,
        problem: ForwardProblem<'_, '_, E>,
    ) -> Result<(), CudaScanError> {
        let shape = problem.shape();
        if shape.is_empty() {
            return Ok(());
        }
        let len = element_count("forward", shape)?;
        let (inputs, state) = problem.into_parts();
        let layout = choose_layout(&inputs.decay);
        // Makes the primary context current: the buffers below are allocated in it.
        self.activate()?;
        let decay = DeviceBuffer::from_slice(&stage(inputs.decay, layout))?;
        let impulse = DeviceBuffer::from_slice(&stage(inputs.impulse, layout))?;
        let initial = inputs
            .initial
            .map(|v| DeviceBuffer::from_slice(&v.to_vec()))
            .transpose()?;
        let mut out = DeviceBuffer::<E>::zeroed(len)?;
        // SAFETY: every buffer was allocated above, after `activate` made this device's
        // primary context current on this thread, and lives until the end of this function.
        unsafe {
            self.forward_device(DeviceForward {
                shape,
                layout,
                direction: inputs.direction,
                decay: &decay,
                impulse: &impulse,
                initial: initial.as_deref(),
                state: &mut out,
            })
        }?;
        let mut host = vec![E::zero(); len];
        out.copy_to(&mut host[..])?;
        unstage(&host, layout, state);
        Ok(())
    }

    pub(crate) fn backward_host<E: DeviceElement>(
        &self,
        problem: BackwardProblem<'_, '_, E>,
    ) -> Result<(), CudaScanError> {
        let shape = problem.shape();
        let len = element_count("backward", shape)?;
        let (inputs, mut outputs) = problem.into_parts();
        if shape.n_steps == 0 {
            if let Some(grad_initial) = outputs.grad_initial.as_mut() {
                copy_or_zero(grad_initial, inputs.grad_last);
            }
            return Ok(());
        }
        if shape.is_empty() {
            return Ok(());
        }
        let layout = choose_layout(&inputs.decay);
        // Makes the primary context current: the buffers below are allocated in it.
        self.activate()?;
        let upload = |view| DeviceBuffer::from_slice(&stage(view, layout));
        let decay = upload(inputs.decay)?;
        let state = upload(inputs.state)?;
        let grad_state = upload(inputs.grad_state)?;
        let upload_1d = |v: Option<ndarray::ArrayView1<'_, E>>| {
            v.map(|v| DeviceBuffer::from_slice(&v.to_vec())).transpose()
        };
        let initial = upload_1d(inputs.initial)?;
        let grad_last = upload_1d(inputs.grad_last)?;
        let mut grad_decay = DeviceBuffer::<E>::zeroed(len)?;
        let mut grad_impulse = DeviceBuffer::<E>::zeroed(len)?;
        let mut grad_initial = match outputs.grad_initial {
            Some(_) => Some(DeviceBuffer::<E>::zeroed(shape.n_features)?),
            None => None,
        };
        // SAFETY: every buffer was allocated above, after `activate` made this device's
        // primary context current on this thread, and lives until the end of this function.
        unsafe {
            self.backward_device(DeviceBackward {
                shape,
                layout,
                direction: inputs.direction,
                decay: &decay,
                state: &state,
                initial: initial.as_deref(),
                grad_state: &grad_state,
                grad_last: grad_last.as_deref(),
                grad_decay: &mut grad_decay,
                grad_impulse: &mut grad_impulse,
                grad_initial: grad_initial.as_deref_mut(),
            })
        }?;
        let mut host = vec![E::zero(); len];
        grad_decay.copy_to(&mut host[..])?;
        unstage(&host, layout, outputs.grad_decay);
        grad_impulse.copy_to(&mut host[..])?;
        unstage(&host, layout, outputs.grad_impulse);
        if let (Some(target), Some(device)) = (outputs.grad_initial.as_mut(), grad_initial) {
            let mut values = vec![E::zero(); shape.n_features];
            device.copy_to(&mut values[..])?;
            target.assign(&ndarray::ArrayView1::from(&values));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_table_matches_names() {
        for kernel in [Kernel::Parallel, Kernel::Serial] {
            for backward in [false, true] {
                for element in [ElementKind::F32, ElementKind::F64] {
                    let name = KERNEL_NAMES[kernel_index(kernel, backward, element)];
                    assert_eq!(name.contains("serial"), kernel == Kernel::Serial);
                    assert_eq!(name.contains("backward"), backward);
                    assert_eq!(name.ends_with("f64"), element == ElementKind::F64);
                    assert!(KERNEL_PTX.contains(&format!(".entry {name}(")));
                }
            }
        }
    }
}
