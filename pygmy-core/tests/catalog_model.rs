//! Model-based property test: random command sequences give the same
//! outcomes and the same books on the SQLite catalog as on the in-memory one
//! (the model), with repeats of op ids mixed in.

use std::sync::Arc;

use proptest::prelude::*;
use pygmy_core::catalog::memory::MemoryCatalog;
use pygmy_core::catalog::sqlite::SqliteCatalog;
use pygmy_core::catalog::{CatalogCommand, CatalogStore};
use pygmy_core::journal::{Op, OpId, Source};
use pygmy_core::types::{default_books, Cost, ItemId};

fn command() -> impl Strategy<Value = CatalogCommand> {
    let item = (0i64..9).prop_map(ItemId);
    prop_oneof![
        3 => item.clone().prop_map(|item| CatalogCommand::Sell { item }),
        1 => (item, proptest::option::of(-120i64..120), proptest::option::of(0i64..5000))
            .prop_map(|(item, count, cents)| CatalogCommand::Update {
                item,
                count,
                cost: cents.and_then(Cost::from_cents),
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_matches_the_model(ops in proptest::collection::vec((command(), 0u8..40), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let model: Arc<dyn CatalogStore> = Arc::new(MemoryCatalog::new());
            let real: Arc<dyn CatalogStore> =
                Arc::new(SqliteCatalog::open(dir.path().join("c.db")).expect("open"));
            let mut books = default_books();
            books[0].count = 3;
            model.seed(books.clone()).await.expect("seed");
            real.seed(books).await.expect("seed");
            let source = Source::Local { node: "n".to_owned() };
            for (cmd, id) in ops {
                // Ids repeat (0..40 over up to 60 ops): a repeat must answer
                // the first outcome on both.
                let op = Op { id: OpId(format!("op{id}")), cmd };
                let expected = model.apply(source.clone(), op.clone()).await.expect("model");
                let got = real.apply(source.clone(), op).await.expect("sqlite");
                prop_assert_eq!(&got, &expected);
            }
            let expected = model.books(None).await.expect("model books");
            prop_assert!(expected.iter().all(|b| b.count >= 0));
            prop_assert_eq!(real.books(None).await.expect("sqlite books"), expected);
            Ok(())
        })?;
    }
}
