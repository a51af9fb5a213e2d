//! Why a postback was refused. The snake_case `as_str()` of each variant is the
//! reason code in replies (`ERROR <reason>`) and the `reason` label in metrics,
//! so the set is fixed and small.

/// One reason a postback was not accepted.
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
    /// A click time that is neither unix seconds nor RFC 3339.
    BadClickTime,
    /// More pass-through parameters than allowed.
    TooManyParams,
    /// A body that is not a flat JSON object or a valid form.
    BadBody,
    /// A body whose content type is neither form nor JSON.
    UnsupportedContentType,
    /// No api key where the source requires one.
    MissingApiKey,
    /// An api key the source does not know.
    BadApiKey,
    /// A client address outside the source's allowed networks.
    IpNotAllowed,
    /// An S2S postback to a source without keys, which takes pixels only.
    PixelOnly,
    /// A source name (path or host) that no configured source has.
    UnknownSource,
    /// A request line, header block or body over its limit.
    TooLarge,
    /// Over a rate limit.
    RateLimited,
    /// The event could not be made durable now.
    Unavailable,
    /// The request (its body) did not arrive within the request timeout.
    RequestTimeout,
    /// A body without `Content-Length` (chunked): postbacks are small and
    /// framed by length, and `Transfer-Encoding` next to `Content-Length` is
    /// the classic request-smuggling shape.
    LengthRequired,
}

impl Reason {
    /// Every reason, for metric pre-registration and exhaustive tests.
    pub const ALL: [Reason; 26] = [
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
        Reason::BadClickTime,
        Reason::TooManyParams,
        Reason::BadBody,
        Reason::UnsupportedContentType,
        Reason::MissingApiKey,
        Reason::BadApiKey,
        Reason::IpNotAllowed,
        Reason::PixelOnly,
        Reason::UnknownSource,
        Reason::TooLarge,
        Reason::RateLimited,
        Reason::Unavailable,
        Reason::RequestTimeout,
        Reason::LengthRequired,
    ];

    /// Position in [`Reason::ALL`], which lists the variants in declaration order.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason code, as sent in replies and used as a metric label.
    pub fn as_str(self) -> &'static str {
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
            Reason::BadClickTime => "bad_click_time",
            Reason::TooManyParams => "too_many_params",
            Reason::BadBody => "bad_body",
            Reason::UnsupportedContentType => "unsupported_content_type",
            Reason::MissingApiKey => "missing_api_key",
            Reason::BadApiKey => "bad_api_key",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::PixelOnly => "pixel_only",
            Reason::UnknownSource => "unknown_source",
            Reason::TooLarge => "too_large",
            Reason::RateLimited => "rate_limited",
            Reason::Unavailable => "unavailable",
            Reason::RequestTimeout => "request_timeout",
            Reason::LengthRequired => "length_required",
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
    fn all_lists_every_reason_at_its_index() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }
}
