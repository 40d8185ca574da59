//! The median every benchmark bin reports.

/// The median of `figures`: the middle one, or the mean of the middle two. Unknown figures
/// (NaN: the CPU time of a broker run with `--attach`) are left out; NaN when none is known.
pub fn median(mut figures: Vec<f64>) -> f64 {
    figures.retain(|x| !x.is_nan());
    if figures.is_empty() {
        return f64::NAN;
    }
    figures.sort_by(f64::total_cmp);
    let m = figures.len() / 2;
    if figures.len().is_multiple_of(2) {
        (figures[m - 1] + figures[m]) / 2.0
    } else {
        figures[m]
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_middle_figure_or_the_mean_of_the_middle_two_leaving_out_unknown_ones() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 5.0, 1.0]), 3.0);
        assert!(median(vec![f64::NAN]).is_nan());
        assert!(median(Vec::new()).is_nan());
    }
}
