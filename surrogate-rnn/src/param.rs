//! Trainable parameters, their gradients, and visiting them by name.

use ndarray::{Array, ArrayViewD, ArrayViewMutD, Dimension};

use crate::Real;

/// A trainable array and the gradient accumulated for it (same shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Param<E, D: Dimension> {
    /// The current value.
    pub value: Array<E, D>,
    /// ∂L/∂value, accumulated by `backward` calls until zeroed.
    pub grad: Array<E, D>,
}

impl<E: Real, D: Dimension> Param<E, D> {
    /// Wraps `value` with a zero gradient.
    pub fn new(value: Array<E, D>) -> Self {
        let grad = Array::zeros(value.raw_dim());
        Self { value, grad }
    }

    /// Both arrays as dynamic-dimensional views (for visitors).
    pub fn views(&self) -> (ArrayViewD<'_, E>, ArrayViewD<'_, E>) {
        (self.value.view().into_dyn(), self.grad.view().into_dyn())
    }

    /// Both arrays as dynamic-dimensional mutable views (for visitors).
    pub fn views_mut(&mut self) -> ParamMut<'_, E> {
        ParamMut {
            value: self.value.view_mut().into_dyn(),
            grad: self.grad.view_mut().into_dyn(),
        }
    }
}

/// Mutable access to one parameter and its gradient, as given to
/// [`Parameters::visit_params_mut`] visitors.
#[derive(Debug)]
pub struct ParamMut<'a, E> {
    /// The value.
    pub value: ArrayViewMutD<'a, E>,
    /// The accumulated gradient.
    pub grad: ArrayViewMutD<'a, E>,
}

/// Read-only visitor: called with each parameter's name, value and gradient.
pub type ParamVisitor<'v, E> = dyn FnMut(&str, ArrayViewD<'_, E>, ArrayViewD<'_, E>) + 'v;

/// Mutable visitor: called with each parameter's name and mutable views of it.
pub type ParamVisitorMut<'v, E> = dyn FnMut(&str, ParamMut<'_, E>) + 'v;

/// Something that owns trainable parameters: a layer, a stack, a model.
///
/// Parameters are visited in a fixed order with stable, dot-separated names
/// (`"layers.0.input_weight"`): the optimizer pairs its state with them by position and
/// checkpoints store them by name.
pub trait Parameters<E: Real> {
    /// Calls `visitor(name, value, grad)` for every parameter, in a fixed order.
    fn visit_params(&self, visitor: &mut ParamVisitor<'_, E>);

    /// Calls `visitor(name, param)` for every parameter, in the same order as
    /// [`Parameters::visit_params`].
    fn visit_params_mut(&mut self, visitor: &mut ParamVisitorMut<'_, E>);

    /// Sets every gradient to zero.
    fn zero_grad(&mut self) {
        self.visit_params_mut(&mut |_, mut p| p.grad.fill(E::zero()));
    }

    /// The total number of scalar parameters.
    fn n_params(&self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |_, value, _| n += value.len());
        n
    }

    /// The Euclidean norm of all gradients together, accumulated in f64.
    fn grad_norm(&self) -> f64 {
        let mut sum = 0.0;
        self.visit_params(&mut |_, _, grad| {
            sum += grad.iter().map(|g| g.as_f64() * g.as_f64()).sum::<f64>();
        });
        sum.sqrt()
    }
}

/// Visits the parameters of `child` with `prefix.` prepended to their names.
pub(crate) fn visit_child<E: Real, P: Parameters<E> + ?Sized>(
    child: &P,
    prefix: &str,
    visitor: &mut ParamVisitor<'_, E>,
) {
    child.visit_params(&mut |name, value, grad| visitor(&format!("{prefix}.{name}"), value, grad));
}

/// Mutable counterpart of [`visit_child`].
pub(crate) fn visit_child_mut<E: Real, P: Parameters<E> + ?Sized>(
    child: &mut P,
    prefix: &str,
    visitor: &mut ParamVisitorMut<'_, E>,
) {
    child.visit_params_mut(&mut |name, param| visitor(&format!("{prefix}.{name}"), param));
}
