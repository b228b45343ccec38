//! Copies between host views of any strides and the contiguous arrays the kernels read.

use std::borrow::Cow;

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

use crate::DeviceLayout;

/// The device layout that copies least for a host view: time-contiguous when time is the
/// view's unit-stride axis, time-major otherwise.
pub(crate) fn choose_layout<E>(view: &ArrayView2<'_, E>) -> DeviceLayout {
    let (n_steps, n_features) = view.dim();
    let strides = view.strides();
    if n_steps > 1 && strides[0] == 1 && (n_features <= 1 || strides[1] != 1) {
        DeviceLayout::TimeContiguous
    } else {
        DeviceLayout::TimeMajor
    }
}

/// The elements of a (T, F) view in `layout` order: borrowed when the view already is
/// contiguous in that order, copied otherwise.
pub(crate) fn stage<'a, E: Copy>(view: ArrayView2<'a, E>, layout: DeviceLayout) -> Cow<'a, [E]> {
    match layout {
        DeviceLayout::TimeMajor => match view.to_slice() {
            Some(slice) => Cow::Borrowed(slice),
            None => Cow::Owned(view.iter().copied().collect()),
        },
        DeviceLayout::TimeContiguous => {
            let transposed = view.reversed_axes();
            match transposed.to_slice() {
                Some(slice) => Cow::Borrowed(slice),
                None => Cow::Owned(transposed.iter().copied().collect()),
            }
        }
    }
}

/// Writes `data`, a contiguous (T, F) array in `layout` order, into a view of any strides.
pub(crate) fn unstage<E: Copy>(data: &[E], layout: DeviceLayout, mut out: ArrayViewMut2<'_, E>) {
    let dim = out.dim();
    let source = match layout {
        DeviceLayout::TimeMajor => ArrayView2::from_shape(dim, data),
        DeviceLayout::TimeContiguous => ArrayView2::from_shape(dim.f(), data),
    }
    .expect("staged data has T·F elements");
    out.assign(&source);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    #[test]
    fn layouts_round_trip_and_borrow_when_contiguous() {
        let values = Array2::from_shape_fn((5, 3), |(t, f)| (10 * t + f) as f32);
        let column_major = {
            let mut a = Array2::zeros((5, 3).f());
            a.assign(&values);
            a
        };
        assert_eq!(choose_layout(&values.view()), DeviceLayout::TimeMajor);
        assert_eq!(
            choose_layout(&column_major.view()),
            DeviceLayout::TimeContiguous
        );
        assert!(matches!(
            stage(values.view(), DeviceLayout::TimeMajor),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            stage(column_major.view(), DeviceLayout::TimeContiguous),
            Cow::Borrowed(_)
        ));
        let reversed = values.slice(s![..;-1, ..]);
        for layout in [DeviceLayout::TimeMajor, DeviceLayout::TimeContiguous] {
            for view in [values.view(), column_major.view(), reversed] {
                let staged = stage(view, layout);
                let mut back = Array2::zeros((5, 3));
                unstage(&staged, layout, back.view_mut());
                assert_eq!(back, view);
            }
        }
        let time_contiguous = stage(values.view(), DeviceLayout::TimeContiguous);
        assert_eq!(&time_contiguous[..5], &[0.0, 10.0, 20.0, 30.0, 40.0]);
    }
}
