//! Order pricing in integer cents (CONTRACT.md "Types"): the server alone
//! computes every amount, and no float ever touches money.

/// The service fee as a fraction: 15 / 100 of the subtotal.
const SERVICE_FEE_NUMERATOR: i64 = 15;
const SERVICE_FEE_DENOMINATOR: i64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub subtotal_cents: i64,
    pub delivery_fee_cents: i64,
    pub service_fee_cents: i64,
    pub total_cents: i64,
}

/// 15% of the subtotal, rounded half up to a whole cent.
pub fn service_fee_cents(subtotal_cents: i64) -> i64 {
    // For non-negative amounts, adding half the denominator before the
    // integer division rounds half up.
    (subtotal_cents * SERVICE_FEE_NUMERATOR + SERVICE_FEE_DENOMINATOR / 2) / SERVICE_FEE_DENOMINATOR
}

/// Prices an order from `(unit price, quantity)` lines and the restaurant's fee.
pub fn price(lines: impl IntoIterator<Item = (i64, i32)>, delivery_fee_cents: i64) -> Price {
    let subtotal_cents = lines
        .into_iter()
        .map(|(unit_price_cents, quantity)| unit_price_cents * i64::from(quantity))
        .sum();
    let service_fee_cents = service_fee_cents(subtotal_cents);
    Price {
        subtotal_cents,
        delivery_fee_cents,
        service_fee_cents,
        total_cents: subtotal_cents + delivery_fee_cents + service_fee_cents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_fee_rounds_half_up() {
        assert_eq!(service_fee_cents(0), 0);
        assert_eq!(service_fee_cents(100), 15);
        // 10 cents * 15% = 1.5 -> 2
        assert_eq!(service_fee_cents(10), 2);
        // 3 cents * 15% = 0.45 -> 0
        assert_eq!(service_fee_cents(3), 0);
        // 30 cents * 15% = 4.5 -> 5
        assert_eq!(service_fee_cents(30), 5);
        // 1299 * 15% = 194.85 -> 195
        assert_eq!(service_fee_cents(1299), 195);
        // 1233 * 15% = 184.95 -> 185
        assert_eq!(service_fee_cents(1233), 185);
    }

    #[test]
    fn total_is_the_sum_of_its_parts() {
        let p = price([(1299, 2), (450, 1)], 299);
        assert_eq!(p.subtotal_cents, 3048);
        assert_eq!(p.service_fee_cents, 457); // 457.2
        assert_eq!(p.delivery_fee_cents, 299);
        assert_eq!(p.total_cents, 3048 + 457 + 299);
    }

    #[test]
    fn largest_valid_order_does_not_overflow() {
        // 50 lines x 20 units x the largest menu price.
        let p = price((0..50).map(|_| (1_000_000, 20)), 100_000);
        assert_eq!(p.subtotal_cents, 1_000_000_000);
        assert_eq!(p.total_cents, 1_000_000_000 + 150_000_000 + 100_000);
    }
}
