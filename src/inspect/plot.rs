//! `inspect --plot`: one small panel per bucket, each a histogram of MOIC on
//! a log axis (the distributions are heavy-tailed: a linear axis shows one
//! bar and a tail), all panels on the same axis so buckets compare at a
//! glance, with the median and p90 marked and named in a legend.

use plotters::prelude::*;

use super::quantile;
use crate::error::{Error, Result};

const PANEL_WIDTH: u32 = 330;
const PANEL_HEIGHT: u32 = 230;
const TITLE_HEIGHT: u32 = 60;
const BINS: usize = 40;
const FONT: &str = "sans-serif";

/// An SVG of each column's distribution, titled with the matrix's size and `key`.
pub fn svg(matrix: &[f32], names: &[String], key: &str) -> Result<String> {
    let cols = names.len();
    if cols == 0 || matrix.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to plot: the matrix is empty".into(),
        ));
    }
    let rows = matrix.len() / cols;
    let columns: Vec<Vec<f32>> = (0..cols)
        .map(|b| {
            let mut c: Vec<f32> = matrix.iter().skip(b).step_by(cols).copied().collect();
            c.sort_by(f32::total_cmp);
            c
        })
        .collect();
    let (lo, hi) = shared_range(&columns);
    let edges: Vec<f64> = (0..=BINS)
        .map(|i| lo * (hi / lo).powf(i as f64 / BINS as f64))
        .collect();

    let per_row = match cols {
        1..=3 => cols,
        4 => 2,
        5..=9 => 3,
        10..=16 => 4,
        _ => 5,
    };
    let grid_rows = cols.div_ceil(per_row);
    let size = (
        PANEL_WIDTH * per_row as u32,
        PANEL_HEIGHT * grid_rows as u32 + TITLE_HEIGHT,
    );
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (head, body) = root.split_vertically(TITLE_HEIGHT);
        let title = format!(
            "MOIC by bucket: {} scenarios, key {}…",
            thousands(rows),
            key.get(..12).unwrap_or(key)
        );
        head.draw(&Text::new(title, (12, 10), (FONT, 20).into_font()))
            .map_err(plot_error)?;
        let subtitle = format!(
            "Bars: share of scenarios per bin, MOIC on a log scale from {} to {} (values beyond are in the end bins)",
            moic_label(lo),
            moic_label(hi)
        );
        head.draw(&Text::new(
            subtitle,
            (12, 36),
            (FONT, 13).into_font().color(&RGBColor(80, 80, 80)),
        ))
        .map_err(plot_error)?;
        let panels = body.split_evenly((grid_rows, per_row));
        for (b, (panel, col)) in panels.iter().zip(&columns).enumerate() {
            draw_panel(panel, &names[b], col, &edges, Palette99::pick(b))?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(out)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    name: &str,
    sorted: &[f32],
    edges: &[f64],
    color: PaletteColor<Palette99>,
) -> Result<()> {
    let n = sorted.len().max(1) as f64;
    let zeros = sorted.iter().take_while(|&&v| v <= 0.0).count();
    let mut counts = vec![0usize; edges.len() - 1];
    let (lo, hi) = (edges[0], edges[edges.len() - 1]);
    let ratio = (hi / lo).ln();
    let last = counts.len() - 1;
    for &v in &sorted[zeros..] {
        let x = f64::from(v).clamp(lo, hi);
        let i = (((x / lo).ln() / ratio) * counts.len() as f64) as usize;
        counts[i.min(last)] += 1;
    }
    let shares: Vec<f64> = counts.iter().map(|&c| 100.0 * c as f64 / n).collect();
    let top = shares.iter().copied().fold(0.0, f64::max).max(1.0) * 1.15;
    let caption = if zeros > 0 {
        format!("{name} ({:.1}% at 0)", 100.0 * zeros as f64 / n)
    } else {
        name.to_string()
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 15))
        .margin(6)
        .x_label_area_size(34)
        .y_label_area_size(44)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("MOIC (log scale)")
        .y_desc("% of scenarios")
        .x_labels(6)
        .y_labels(4)
        .x_label_formatter(&|v| moic_label(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 11))
        .axis_desc_style((FONT, 12))
        .draw()
        .map_err(plot_error)?;
    if zeros == sorted.len() {
        // Nothing to draw on a log axis: say so instead of empty axes.
        let (w, h) = area.dim_in_pixel();
        area.draw(&Text::new(
            "every scenario at 0x".to_string(),
            (w as i32 / 2 - 60, h as i32 / 2),
            (FONT, 13).into_font().color(&RGBColor(80, 80, 80)),
        ))
        .map_err(plot_error)?;
        return Ok(());
    }
    chart
        .draw_series(
            edges
                .windows(2)
                .zip(&shares)
                .map(|(e, &s)| Rectangle::new([(e[0], 0.0), (e[1], s)], color.mix(0.55).filled())),
        )
        .map_err(plot_error)?;
    for (q, what, style) in [(0.5, "median", BLACK), (0.9, "p90", RGBColor(200, 30, 30))] {
        let v = quantile(sorted, q).clamp(lo, hi);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(v, 0.0), (v, top)],
                style.stroke_width(2),
            )))
            .map_err(plot_error)?
            .label(format!("{what} {}", moic_label(quantile(sorted, q))))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], style.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 11))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// The axis range every panel shares: from the 0.1th to the 99.9th
/// percentile of the positive cells over all buckets, widened to whole
/// steps of the log scale.
fn shared_range(columns: &[Vec<f32>]) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0f64);
    for c in columns {
        let positive: &[f32] = &c[c.iter().take_while(|&&v| v <= 0.0).count()..];
        if positive.is_empty() {
            continue;
        }
        lo = lo.min(quantile(positive, 0.001));
        hi = hi.max(quantile(positive, 0.999));
    }
    if !lo.is_finite() || hi <= 0.0 {
        return (0.1, 10.0);
    }
    let lo = 10f64.powf((lo.log10() * 2.0).floor() / 2.0);
    let hi = 10f64.powf((hi.log10() * 2.0).ceil() / 2.0).max(lo * 10.0);
    (lo, hi)
}

/// 100000 as "100,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn moic_label(v: f64) -> String {
    if v <= 0.0 {
        "0x".to_string()
    } else if v >= 10.0 {
        format!("{v:.0}x")
    } else if v >= 1.0 {
        format!("{v:.1}x")
    } else if v >= 0.01 {
        format!("{v:.2}x")
    } else {
        format!("{v:.0e}x")
    }
}

fn plot_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> Error {
    Error::Internal(format!("drawing the plot: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_panel_per_bucket_with_its_name() {
        let names: Vec<String> = ["Seed", "Series A & B", "Zero"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let matrix: Vec<f32> = (1..=500)
            .flat_map(|i| [i as f32 / 100.0, (i as f32 / 50.0).powi(2), 0.0])
            .collect();
        let svg = svg(&matrix, &names, "0123456789abcdef").unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Each text element's content is on a line of its own, escaped as XML.
        let text = |t: &str| svg.contains(&format!(">\n{t}\n</text>"));
        assert!(
            text("Seed") && text("Series A &amp; B") && text("Zero (100.0% at 0)"),
            "{svg}"
        );
        assert!(svg.contains("MOIC (log scale)") && svg.contains("median"));
        assert!(text("MOIC by bucket: 500 scenarios, key 0123456789ab…"));
        assert!(text("every scenario at 0x"));
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
        // Bars for the two buckets with positive cells, none for the zero one.
        assert!(svg.matches("<rect").count() >= 2 * BINS);
    }

    #[test]
    fn the_range_spans_every_bucket_in_half_decades() {
        let cols = vec![vec![0.0, 0.5, 1.0, 2.0], vec![3.0, 30.0, 40.0]];
        let (lo, hi) = shared_range(&cols);
        assert!(lo <= 0.5 && hi >= 40.0, "{lo} {hi}");
        assert!((lo.log10() * 2.0 - (lo.log10() * 2.0).round()).abs() < 1e-9);
    }
}
