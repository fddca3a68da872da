//! Pure building blocks every layer of kedge shares: deadlines that saturate instead of
//! overflowing, fixed-bucket histograms, and the units and keyword parsing of the config file.
//! It depends on nothing of kedge, and nothing in it does I/O.

pub mod de;
pub mod deadline;
pub mod histogram;
pub mod units;
