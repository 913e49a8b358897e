//! Every JSON request body the API parses: the first byte picks the type,
//! the rest is the body; deserialise as the handlers do, then validate.
#![no_main]

use actors::domain::input::*;
use libfuzzer_sys::fuzz_target;

fn body<T: serde::de::DeserializeOwned>(json: &[u8]) -> Option<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(&mut deserializer).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => drop(body::<NewOrderInput>(json).map(|b| b.parse())),
        1 => drop(body::<RegistrationInput>(json).map(|b| b.parse())),
        2 => drop(body::<NewRestaurantInput>(json).map(|b| b.parse())),
        3 => drop(body::<RestaurantPatchInput>(json).map(|b| b.parse())),
        4 => drop(body::<NewMenuItemInput>(json).map(|b| b.parse())),
        5 => drop(body::<MenuItemPatchInput>(json).map(|b| b.parse())),
        _ => drop(body::<LocationInput>(json).map(|b| b.parse())),
    }
});
