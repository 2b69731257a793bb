//! Precedence and environment layers.

use proptest::prelude::*;
use sidekey_model::{layers, Environment, Merge, Rank};

fn env(s: &str) -> Environment {
    Environment::parse(s).unwrap()
}

fn svc(layer: usize, service: usize) -> Rank {
    Rank::Service { layer, service }
}

#[test]
fn rank_order_is_layer_major_and_picks_win() {
    assert!(svc(1, 0) > svc(0, 9));
    assert!(svc(0, 2) > svc(0, 1));
    assert!(Rank::Pick { index: 0 } > svc(usize::MAX, usize::MAX));
    assert!(Rank::Pick { index: 1 } > Rank::Pick { index: 0 });
}

#[test]
fn env_first_service_beats_base_last_service() {
    // layers: [staging (base), pr-1 (env)]; services: [common, api, db]
    let mut m = Merge::new();
    m.offer("DB_URL", svc(1, 0), "pr-1/common");
    m.offer("DB_URL", svc(0, 2), "staging/db");
    assert_eq!(m.into_sorted(), vec![("DB_URL".to_owned(), "pr-1/common")]);
}

#[test]
fn later_service_wins_within_a_layer() {
    let mut m = Merge::new();
    m.offer("X", svc(0, 1), "api");
    m.offer("X", svc(0, 0), "common");
    assert_eq!(m.get("X"), Some(&"api"));
    assert_eq!(m.rank("X"), Some(svc(0, 1)));
}

#[test]
fn picks_beat_everything() {
    let mut m = Merge::new();
    m.offer("X", Rank::Pick { index: 0 }, "pick");
    m.offer("X", svc(5, 5), "service");
    m.offer("Y", svc(0, 0), "only");
    assert_eq!(
        m.into_sorted(),
        vec![("X".to_owned(), "pick"), ("Y".to_owned(), "only")]
    );
}

#[test]
fn equal_rank_keeps_first() {
    let mut m = Merge::default();
    assert!(m.is_empty());
    m.offer("X", svc(0, 0), 1);
    m.offer("X", svc(0, 0), 2);
    assert_eq!(m.get("X"), Some(&1));
    assert_eq!(m.len(), 1);
}

#[test]
fn sorted_by_name_case_sensitive() {
    let mut m = Merge::new();
    for (i, v) in ["b", "B", "a", "_", "A"].into_iter().enumerate() {
        m.offer(v, svc(0, i), i);
    }
    let names: Vec<String> = m.into_sorted().into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["A", "B", "_", "a", "b"]);
}

#[test]
fn layers_order_and_dedup() {
    let pr = env("pr-1");
    assert_eq!(layers(&pr, &[]), vec![pr.clone()]);
    assert_eq!(
        layers(&pr, &[env("base"), env("staging")]),
        vec![env("base"), env("staging"), pr.clone()]
    );
    assert_eq!(
        layers(
            &pr,
            &[env("staging"), pr.clone(), env("base"), env("staging")]
        ),
        vec![env("staging"), env("base"), pr.clone()]
    );
    assert_eq!(layers(&pr, std::slice::from_ref(&pr)), vec![pr]);
}

fn rank() -> impl Strategy<Value = Rank> {
    prop_oneof![
        (0usize..4, 0usize..4).prop_map(|(layer, service)| Rank::Service { layer, service }),
        (0usize..4).prop_map(|index| Rank::Pick { index }),
    ]
}

proptest! {
    #[test]
    fn offer_order_does_not_matter(
        offers in proptest::collection::vec((prop::sample::select(vec!["A", "B", "C", "D"]), rank()), 0..40)
            .prop_map(|mut v| {
                // one value per (var, rank): a parameter is offered once
                v.sort();
                v.dedup();
                v
            })
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let (ordered, shuffled) = offers;
        let run = |offers: &[(&str, Rank)]| {
            let mut m = Merge::new();
            for (var, rank) in offers {
                m.offer(var, *rank, (var.to_string(), *rank));
            }
            m.into_sorted()
        };
        let a = run(&ordered);
        let b = run(&shuffled);
        prop_assert_eq!(&a, &b);
        // and the winner is the maximum rank per variable
        for (var, (_, rank)) in &a {
            let max = ordered.iter().filter(|(v, _)| v == var).map(|(_, r)| *r).max().unwrap();
            prop_assert_eq!(*rank, max);
        }
    }
}
