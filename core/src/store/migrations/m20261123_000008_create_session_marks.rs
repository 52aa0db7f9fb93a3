use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// One row per running writer: the highest event `seq` whose session it
/// has written, and a heartbeat. A stale row is a writer that died with
/// session deltas unwritten; see `store::sessions`.
#[derive(DeriveIden)]
enum SessionMarks {
    Table,
    WriterId,
    FoldedSeq,
    HeartbeatAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SessionMarks::Table)
                    .if_not_exists()
                    .col(uuid(SessionMarks::WriterId).primary_key())
                    .col(big_integer(SessionMarks::FoldedSeq))
                    .col(big_integer(SessionMarks::HeartbeatAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SessionMarks::Table).to_owned())
            .await
    }
}
