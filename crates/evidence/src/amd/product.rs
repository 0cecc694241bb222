//! AMD EPYC product generations, and how a report says which one it came from.

use serde::Serialize;

/// A product generation with its own AMD root key (ARK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// 3rd generation EPYC (Zen 3).
    Milan,
    /// 4th generation EPYC (Zen 4), including Bergamo and Siena.
    Genoa,
    /// 5th generation EPYC (Zen 5).
    Turin,
}

impl Product {
    /// All products with a built-in root.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The name AMD uses (and the KDS path segment).
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// Parse a product name, case-insensitively.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| format!("unknown AMD product '{name}' (expected milan, genoa or turin)"))
    }

    /// Identify the product from a report's CPUID family and model (version 3 and later).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0f) => Some(Product::Milan),
            (0x19, 0x10..=0x1f | 0xa0..=0xaf) => Some(Product::Genoa),
            (0x1a, 0x00..=0x1f) => Some(Product::Turin),
            _ => None,
        }
    }

    /// Whether TCB versions use the Turin layout (FMC SPL first).
    pub fn turin_layout(self) -> bool {
        matches!(self, Product::Turin)
    }

    /// AMD's root key certificate for this product, as built into the `sev` crate (PEM).
    pub fn builtin_ark_pem(self) -> &'static [u8] {
        use sev::certs::snp::builtin;
        match self {
            Product::Milan => builtin::milan::ARK,
            Product::Genoa => builtin::genoa::ARK,
            Product::Turin => builtin::turin::ARK,
        }
    }

    /// AMD's signing key certificate (ASK, for VCEKs) for this product (PEM).
    pub fn builtin_ask_pem(self) -> &'static [u8] {
        use sev::certs::snp::builtin;
        match self {
            Product::Milan => builtin::milan::ASK,
            Product::Genoa => builtin::genoa::ASK,
            Product::Turin => builtin::turin::ASK,
        }
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
