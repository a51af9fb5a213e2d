//! Why the strict parser refused a postback: pure parse outcomes, nothing about
//! auth, transport or availability (those are [`crate::rejection::Rejection`]s).
//! The snake_case `as_str()` of each variant is the reason code in replies
//! (`ERROR <reason>`) and the `reason` label in metrics, so the set is fixed and small.

/// One reason the parser refused a postback; each is answered 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An invalid percent escape, or bytes that are not UTF-8 after decoding.
    BadEncoding,
    /// The same key twice (in the query, the body, or across both).
    DuplicateParam,
    /// No tracking token, or an empty one.
    MissingTracking,
    /// A tracking token holding control characters.
    BadTracking,
    /// A value or key longer than its limit.
    ParamTooLong,
    /// A value that is a template macro nobody filled in (`{clickid}`, `REPLACE`).
    UnfilledMacro,
    /// An amount that does not follow the source's amount grammar.
    BadAmount,
    /// No amount where the source requires one.
    MissingAmount,
    /// An amount above the source's maximum (or negative where not allowed by range).
    AmountOutOfRange,
    /// A status value the source does not know.
    BadStatus,
    /// A currency that is not an ISO 4217 code.
    BadCurrency,
    /// A currency other than the one the source fixes.
    CurrencyMismatch,
    /// More pass-through parameters than allowed.
    TooManyParams,
    /// A body that is not a flat JSON object or a valid form.
    BadBody,
    /// An amount that is a template macro nobody filled in (`AMOUNT`, `{payout}`).
    UnfilledAmount,
    /// A currency that is an unfilled macro.
    UnfilledCurrency,
    /// A status that is an unfilled macro (`{status}`, `OPTIONAL`).
    UnfilledStatus,
    /// A transaction id that is an unfilled macro.
    UnfilledTxid,
    /// A goal that is an unfilled macro.
    UnfilledGoal,
    /// A campaign id that is an unfilled macro.
    UnfilledCampaignId,
    /// An ad set id that is an unfilled macro.
    UnfilledAdsetId,
    /// An ad id that is an unfilled macro.
    UnfilledAdId,
    /// A placement that is an unfilled macro.
    UnfilledPlacement,
    /// A parameter named like a status carries a declining word
    /// (`status=reject`) while the source's own status says approved.
    ConflictingStatus,
}

impl Reason {
    /// Every reason, in declaration order: for metric pre-registration and
    /// exhaustive tests.
    pub(crate) const ALL: [Reason; 24] = [
        Reason::BadEncoding,
        Reason::DuplicateParam,
        Reason::MissingTracking,
        Reason::BadTracking,
        Reason::ParamTooLong,
        Reason::UnfilledMacro,
        Reason::BadAmount,
        Reason::MissingAmount,
        Reason::AmountOutOfRange,
        Reason::BadStatus,
        Reason::BadCurrency,
        Reason::CurrencyMismatch,
        Reason::TooManyParams,
        Reason::BadBody,
        Reason::UnfilledAmount,
        Reason::UnfilledCurrency,
        Reason::UnfilledStatus,
        Reason::UnfilledTxid,
        Reason::UnfilledGoal,
        Reason::UnfilledCampaignId,
        Reason::UnfilledAdsetId,
        Reason::UnfilledAdId,
        Reason::UnfilledPlacement,
        Reason::ConflictingStatus,
    ];

    /// The reason code, as sent in replies and used as a metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::BadEncoding => "bad_encoding",
            Reason::DuplicateParam => "duplicate_param",
            Reason::MissingTracking => "missing_tracking",
            Reason::BadTracking => "bad_tracking",
            Reason::ParamTooLong => "param_too_long",
            Reason::UnfilledMacro => "unfilled_macro",
            Reason::BadAmount => "bad_amount",
            Reason::MissingAmount => "missing_amount",
            Reason::AmountOutOfRange => "amount_out_of_range",
            Reason::BadStatus => "bad_status",
            Reason::BadCurrency => "bad_currency",
            Reason::CurrencyMismatch => "currency_mismatch",
            Reason::TooManyParams => "too_many_params",
            Reason::BadBody => "bad_body",
            Reason::UnfilledAmount => "unfilled_amount",
            Reason::UnfilledCurrency => "unfilled_currency",
            Reason::UnfilledStatus => "unfilled_status",
            Reason::UnfilledTxid => "unfilled_txid",
            Reason::UnfilledGoal => "unfilled_goal",
            Reason::UnfilledCampaignId => "unfilled_campaign_id",
            Reason::UnfilledAdsetId => "unfilled_adset_id",
            Reason::UnfilledAdId => "unfilled_ad_id",
            Reason::UnfilledPlacement => "unfilled_placement",
            Reason::ConflictingStatus => "conflicting_status",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn all_lists_every_reason_in_declaration_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }
}
