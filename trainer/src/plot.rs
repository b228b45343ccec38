//! Line charts (PNG and SVG) with plotters.
//!
//! Text needs a TrueType font. Rather than linking a system font library, the first of a
//! few common font files found on the machine is registered with plotters' pure-Rust
//! `ab_glyph` renderer (set `TRAINER_FONT` to choose one, or to `none` for no text). Without
//! any font the charts are still drawn, without titles, tick labels or legends, and a note
//! says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

const FAMILY: &str = "sans-serif";

/// Registers a font once; returns whether text can be drawn.
fn font_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let from_env = std::env::var_os("TRAINER_FONT").map(PathBuf::from);
        if from_env.as_deref() == Some(Path::new("none")) {
            return false;
        }
        let candidates = from_env
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(PathBuf::from));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // plotters keeps fonts for the life of the process; one leaked font file.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        eprintln!(
            "note: no TrueType font found (set TRAINER_FONT=/path/to/font.ttf); \
             plots are drawn without text"
        );
        false
    })
}

/// How an axis maps values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Base-10 logarithmic; non-positive values are left out.
    Log,
}

impl Scale {
    fn map(self, v: f64) -> Option<f64> {
        match self {
            Self::Linear => v.is_finite().then_some(v),
            Self::Log => (v > 0.0 && v.is_finite()).then(|| v.log10()),
        }
    }

    fn label(self, v: f64) -> String {
        let value = match self {
            Self::Linear => v,
            Self::Log => 10f64.powf(v),
        };
        let magnitude = value.abs();
        if magnitude == 0.0 {
            "0".into()
        } else if !(1e-3..1e5).contains(&magnitude) {
            format!("{value:.0e}")
        } else if magnitude >= 100.0 || (value.fract() == 0.0 && magnitude >= 1.0) {
            format!("{value:.0}")
        } else {
            format!("{value:.3}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .into()
        }
    }
}

/// One panel: a title, axis descriptions and named series of points.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    /// A fixed y range in data units (e.g. accuracy 0..1); `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Named point sets drawn as markers only (no line), after the series.
    pub markers: Vec<(String, Vec<(f64, f64)>)>,
    /// Vertical lines at these x values, each with a short label at the top.
    pub x_marks: Vec<(f64, String)>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Writes `charts`, stacked vertically, to `<stem>.png` and `<stem>.svg`; returns both paths.
/// Each file is drawn to a temporary and renamed into place, so a full disk never leaves a
/// truncated plot behind.
pub fn save(stem: &Path, charts: &[Chart]) -> Result<(PathBuf, PathBuf)> {
    let height = 380 * charts.len().max(1) as u32;
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    draw_atomically(&png, |temp| {
        draw_all(
            &BitMapBackend::new(temp, (900, height)).into_drawing_area(),
            charts,
        )
    })?;
    draw_atomically(&svg, |temp| {
        draw_all(
            &SVGBackend::new(temp, (900, height)).into_drawing_area(),
            charts,
        )
    })?;
    Ok((png, svg))
}

fn draw_atomically(path: &Path, draw: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let temp = crate::atomic::temporary(path);
    if let Err(e) = draw(&temp) {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("drawing `{}`", path.display()));
    }
    crate::atomic::commit(&temp, path)
}

fn draw_all<B: DrawingBackend>(root: &DrawingArea<B, Shift>, charts: &[Chart]) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<B::ErrorType>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((charts.len().max(1), 1));
    for (chart, area) in charts.iter().zip(panels.iter()) {
        draw_chart(area, chart)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = 0.04 * (hi - lo);
    (lo - pad, hi + pad)
}

fn draw_chart<B: DrawingBackend>(area: &DrawingArea<B, Shift>, chart: &Chart) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<B::ErrorType>| anyhow!("{e}");
    let text = font_available();
    let mapped: Vec<(&str, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|(name, points)| {
            let points = points
                .iter()
                .filter_map(|&(x, y)| Some((chart.x_scale.map(x)?, chart.y_scale.map(y)?)))
                .collect();
            (name.as_str(), points)
        })
        .collect();
    let (x_lo, x_hi) = bounds(mapped.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)));
    let (y_lo, y_hi) = match chart.y_range {
        Some((lo, hi)) => (
            chart.y_scale.map(lo).unwrap_or(0.0),
            chart.y_scale.map(hi).unwrap_or(1.0),
        ),
        None => bounds(mapped.iter().flat_map(|(_, p)| p.iter().map(|q| q.1))),
    };
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if text {
        builder
            .caption(&chart.title, (FAMILY, 20))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut ctx = builder
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(err)?;
    let (xs, ys) = (chart.x_scale, chart.y_scale);
    let x_fmt = move |v: &f64| xs.label(*v);
    let y_fmt = move |v: &f64| ys.label(*v);
    let mut mesh = ctx.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style((FAMILY, 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;
    for (k, (name, points)) in mapped.into_iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        let single = points.len() == 1;
        let series = ctx
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(err)?;
        if text {
            series.label(name.to_owned()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        if single || chart.series[k].1.len() <= 60 {
            ctx.draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 3, ShapeStyle::from(&color).filled())),
            )
            .map_err(err)?;
        }
    }
    let marker_colors = chart.series.len()..;
    for ((name, points), k) in chart.markers.iter().zip(marker_colors) {
        let color = PALETTE[k % PALETTE.len()];
        let points: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|&(x, y)| Some((xs.map(x)?, ys.map(y)?)))
            .collect();
        let drawn = ctx
            .draw_series(
                points
                    .iter()
                    .map(|&p| TriangleMarker::new(p, 5, ShapeStyle::from(&color).filled())),
            )
            .map_err(err)?;
        if text {
            drawn.label(name.to_owned()).legend(move |(x, y)| {
                TriangleMarker::new((x + 10, y), 5, ShapeStyle::from(&color).filled())
            });
        }
    }
    for (x, label) in &chart.x_marks {
        let Some(x) = xs.map(*x) else { continue };
        if !(x_lo..=x_hi).contains(&x) {
            continue;
        }
        let grey = RGBColor(120, 120, 120);
        ctx.draw_series(DashedLineSeries::new(
            [(x, y_lo), (x, y_hi)],
            6,
            4,
            ShapeStyle::from(&grey).stroke_width(1),
        ))
        .map_err(err)?;
        if text {
            let top = y_hi - 0.02 * (y_hi - y_lo);
            // A few pixels right of the line, so the line does not cross the label.
            let text = Text::new(label.clone(), (4, 0), (FAMILY, 12).into_font().color(&grey));
            ctx.draw_series(std::iter::once(EmptyElement::at((x, top)) + text))
                .map_err(err)?;
        }
    }
    if text && chart.series.len() + chart.markers.len() > 1 {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss_chart(markers: bool, x_marks: Vec<(f64, String)>) -> Chart {
        Chart {
            title: "loss".into(),
            x_label: "iteration".into(),
            y_label: "cross-entropy".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Log,
            y_range: None,
            series: vec![("loss".into(), vec![(1.0, 0.7), (2.0, 7e3), (3.0, 1e-8)])],
            markers: if markers {
                vec![("loss exactly 0".into(), vec![(3.0, 1e-8)])]
            } else {
                Vec::new()
            },
            x_marks,
        }
    }

    fn svg_of(chart: Chart) -> String {
        let dir = tempfile::tempdir().unwrap();
        let (png, svg) = save(&dir.path().join("curve"), &[chart]).unwrap();
        assert!(std::fs::metadata(png).unwrap().len() > 0);
        std::fs::read_to_string(svg).unwrap()
    }

    #[test]
    fn markers_and_stage_lines_are_drawn_on_a_log_scale() {
        let plain = svg_of(loss_chart(false, Vec::new()));
        let with_markers = svg_of(loss_chart(true, Vec::new()));
        assert!(with_markers.len() > plain.len(), "the markers add elements");
        let inside = vec![(1.5, "n = 1024".to_owned())];
        assert!(svg_of(loss_chart(false, inside)).len() > plain.len());
        // A mark outside the x range or not a number is skipped, not an error.
        let outside = vec![(99.0, "n = 4096".to_owned()), (f64::NAN, "?".to_owned())];
        assert_eq!(svg_of(loss_chart(false, outside)), plain);
    }
}
