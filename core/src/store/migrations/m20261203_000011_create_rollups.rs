use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Hourly rollups: one row per (project, dimension, hour, value); dimension
/// 0 is the totals row, whose value is empty.
#[derive(DeriveIden)]
enum Rollups {
    Table,
    ProjectId,
    Dim,
    Hour,
    Value,
    Events,
    Pageviews,
    Visitors,
    Sessions,
    Bounces,
    DurationMs,
    SessionPageviews,
}

/// Hours whose rollups are missing or out of date. The writer marks the
/// hour of every event it stores and the start hour of every session it
/// changes; `version` grows with each mark, so that the rollup job only
/// clears a mark that nothing renewed while it worked.
#[derive(DeriveIden)]
enum RollupDirty {
    Table,
    ProjectId,
    Hour,
    Version,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let big = |c: Rollups| ColumnDef::new(c).big_integer().not_null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(Rollups::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Rollups::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(Rollups::Dim).small_integer().not_null())
                    .col(big(Rollups::Hour))
                    .col(ColumnDef::new(Rollups::Value).text().not_null())
                    .col(big(Rollups::Events))
                    .col(big(Rollups::Pageviews))
                    .col(ColumnDef::new(Rollups::Visitors).blob().not_null())
                    .col(big(Rollups::Sessions))
                    .col(big(Rollups::Bounces))
                    .col(big(Rollups::DurationMs))
                    .col(big(Rollups::SessionPageviews))
                    .primary_key(
                        Index::create()
                            .col(Rollups::ProjectId)
                            .col(Rollups::Dim)
                            .col(Rollups::Hour)
                            .col(Rollups::Value),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RollupDirty::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(RollupDirty::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(RollupDirty::Hour).big_integer().not_null())
                    .col(
                        ColumnDef::new(RollupDirty::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(RollupDirty::ProjectId)
                            .col(RollupDirty::Hour),
                    )
                    .to_owned(),
            )
            .await?;
        // Events stored before this migration: every hour of theirs is to
        // be rolled up.
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO rollup_dirty (project_id, hour, version) \
                 SELECT DISTINCT project_id, \"timestamp\" / 3600000, 1 FROM events WHERE true \
                 ON CONFLICT (project_id, hour) DO NOTHING",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RollupDirty::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Rollups::Table).to_owned())
            .await
    }
}
