mod gates;
mod governance;
mod model;
mod tiers;
mod util;
