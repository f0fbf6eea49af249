//! Who each version is: its gopher's name and colour, and its picture.

use common::wire::Version;

/// The gopher a version answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub name: &'static str,
    pub color: &'static str,
    /// The fill colour of the body in the picture.
    pub fill: &'static str,
    /// v2's greeting; v1 predates greetings.
    pub greeting: Option<&'static str>,
    /// What the version added over the one before it.
    pub features: &'static [&'static str],
}

/// The identity of `version`.
pub fn identity(version: Version) -> Identity {
    match version {
        Version::V1 => Identity {
            name: "Gordon",
            color: "blue",
            fill: "#00ADD8",
            greeting: None,
            features: &[],
        },
        Version::V2 => Identity {
            name: "Goldie",
            color: "gold",
            fill: "#F2B632",
            greeting: Some("Hello from the new distributor!"),
            features: &["greeting", "party-hat"],
        },
    }
}

/// The gopher picture for `version`, as an SVG document. v2 wears a party hat.
pub fn svg(version: Version) -> String {
    let id = identity(version);
    let hat = match version {
        Version::V1 => "",
        Version::V2 => concat!(
            r##"<polygon points="100,6 78,58 122,58" fill="#E8467C" stroke="#222" stroke-width="3"/>"##,
            r##"<circle cx="100" cy="8" r="7" fill="#FFF36B" stroke="#222" stroke-width="2"/>"##,
        ),
    };
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 240" width="200" height="240" role="img" aria-label="{name} the {color} gopher ({version})">
<title>{name} the {color} gopher ({version})</title>
<ellipse cx="52" cy="62" rx="16" ry="14" fill="{fill}" stroke="#222" stroke-width="3"/>
<ellipse cx="148" cy="62" rx="16" ry="14" fill="{fill}" stroke="#222" stroke-width="3"/>
<path d="M40 110 Q40 52 100 52 Q160 52 160 110 L160 190 Q160 228 100 228 Q40 228 40 190 Z" fill="{fill}" stroke="#222" stroke-width="3"/>
<ellipse cx="30" cy="150" rx="12" ry="7" fill="#F4D0A4" stroke="#222" stroke-width="2"/>
<ellipse cx="170" cy="150" rx="12" ry="7" fill="#F4D0A4" stroke="#222" stroke-width="2"/>
<circle cx="76" cy="92" r="18" fill="#fff" stroke="#222" stroke-width="3"/>
<circle cx="124" cy="92" r="18" fill="#fff" stroke="#222" stroke-width="3"/>
<circle cx="81" cy="94" r="7" fill="#222"/>
<circle cx="119" cy="94" r="7" fill="#222"/>
<ellipse cx="100" cy="120" rx="15" ry="10" fill="#F4D0A4" stroke="#222" stroke-width="2"/>
<ellipse cx="100" cy="114" rx="7" ry="5" fill="#222"/>
<rect x="93" y="128" width="14" height="12" rx="2" fill="#fff" stroke="#222" stroke-width="2"/>
<ellipse cx="76" cy="228" rx="14" ry="7" fill="#F4D0A4" stroke="#222" stroke-width="2"/>
<ellipse cx="124" cy="228" rx="14" ry="7" fill="#F4D0A4" stroke="#222" stroke-width="2"/>
{hat}
<text x="100" y="200" font-family="sans-serif" font-size="22" text-anchor="middle" fill="#222">{version}</text>
</svg>
"##,
        name = id.name,
        color = id.color,
        fill = id.fill,
        version = version,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_look_different() {
        assert_ne!(identity(Version::V1).name, identity(Version::V2).name);
        assert_ne!(identity(Version::V1).color, identity(Version::V2).color);
        let (v1, v2) = (svg(Version::V1), svg(Version::V2));
        assert_ne!(v1, v2);
        assert!(v1.starts_with("<svg") && v1.trim_end().ends_with("</svg>"));
        assert!(v2.contains("polygon"), "v2 wears a hat");
    }
}
