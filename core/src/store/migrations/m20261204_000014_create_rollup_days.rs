use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Daily rollups: the hourly rollups of one UTC day merged, one row per
/// (project, dimension, day, value), so that a month is read in 30 rows
/// per value instead of 720. Built by the rollup job from the hourly rows
/// once the day is over; trusted only while the day has no
/// `rollup_days_due` row.
#[derive(DeriveIden)]
enum RollupDays {
    Table,
    ProjectId,
    Dim,
    Day,
    Value,
    Events,
    Pageviews,
    Visitors,
    Sessions,
    Bounces,
    DurationMs,
    SessionPageviews,
}

/// Days whose daily rollup is missing or out of date: every rewrite of
/// one of their hours marks them (in its transaction); `version` grows
/// with each mark, so that the job only clears a mark nothing renewed
/// while it worked.
#[derive(DeriveIden)]
enum RollupDaysDue {
    Table,
    ProjectId,
    Day,
    Version,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let big = |c: RollupDays| ColumnDef::new(c).big_integer().not_null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(RollupDays::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(RollupDays::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(RollupDays::Dim).small_integer().not_null())
                    .col(big(RollupDays::Day))
                    .col(ColumnDef::new(RollupDays::Value).text().not_null())
                    .col(big(RollupDays::Events))
                    .col(big(RollupDays::Pageviews))
                    .col(ColumnDef::new(RollupDays::Visitors).blob().not_null())
                    .col(big(RollupDays::Sessions))
                    .col(big(RollupDays::Bounces))
                    .col(big(RollupDays::DurationMs))
                    .col(big(RollupDays::SessionPageviews))
                    .primary_key(
                        Index::create()
                            .col(RollupDays::ProjectId)
                            .col(RollupDays::Dim)
                            .col(RollupDays::Day)
                            .col(RollupDays::Value),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RollupDaysDue::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(RollupDaysDue::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(RollupDaysDue::Day).big_integer().not_null())
                    .col(
                        ColumnDef::new(RollupDaysDue::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(RollupDaysDue::ProjectId)
                            .col(RollupDaysDue::Day),
                    )
                    .to_owned(),
            )
            .await?;
        // Days rolled up before this migration have no daily rollup yet.
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO rollup_days_due (project_id, day, version) \
                 SELECT DISTINCT project_id, hour / 24, 1 FROM rollups WHERE true \
                 ON CONFLICT (project_id, day) DO NOTHING",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RollupDaysDue::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(RollupDays::Table).to_owned())
            .await
    }
}
